"""Decode an uploaded recording, whatever its format, into the canonical PCM WAV tapevault stores.

The spooled upload is decoded frame by frame straight into ``dst``: memory stays bounded whatever
its length. Every failure the client can fix is :class:`~tapevault.errors.InvalidAudio` (or its
leaf :class:`~tapevault.errors.UnsupportedMediaType`) saying what is wrong; no ``av`` exception
escapes, and ``dst`` is removed. Decisions, and why:

* **Demuxer.** :func:`sniff` picks it from the first bytes; FFmpeg never probes. Only seven
  demuxers (WAV, MP3, ADTS, FLAC, Ogg, Matroska/WebM, MP4) ever see an upload, so those that open
  other files or URLs (HLS, concat...) are out of reach.
* **Fast path.** A WAV :func:`~tapevault.core.wav.parse_wav` accepts (8/16/24-bit PCM, mono or
  stereo) is copied bit-exact without FFmpeg.
* **Rate.** The decoded rate, never resampled; 8000-48000 Hz or refused. Opus always decodes at
  48 kHz whatever the encoder was fed, so Opus is stored at 48 kHz.
* **Channels.** More than ``max_channels`` (2) are downmixed with FFmpeg's standard matrix: a
  4-microphone or 5.1 recording is still worth keeping, and we store mono or stereo only.
* **Bits.** 24 when the source is lossless with more than 16 bits (24/32-bit PCM, float WAV,
  24-bit FLAC/ALAC; 32-bit integer keeps its top 24 bits), else 16: lossy codecs, μ-law and A-law
  carry nothing beyond 16 bits, and 24 would cost half as much storage again for nothing.
* **Truncated or corrupt: nothing half-written.** Refused when FFmpeg reports an error while
  demuxing or decoding (a cut FLAC, Vorbis or ADTS frame, a missing moov), when the demuxer flags
  a packet corrupt, when a WAV's data chunk claims more than the body holds (also checked by
  :func:`probe`, before the 202), or when the audio falls more
  than 0.5 s + 1% short of a length the container states (MP4, FLAC STREAMINFO, Matroska Duration,
  MP3 Xing/Info/VBRI, Ogg end granule). For MP3 without Xing and raw ADTS FFmpeg's length is a
  bitrate estimate, wrong for VBR, so it is not compared. Streams that state no length (those, and
  MediaRecorder's WebM) cut between packets cannot be told from whole files: stored as they are.
* **Bombs.** Output is capped at ``max_output_bytes`` (and the 4 GiB a WAV header can describe),
  at ``max_ratio`` (256) times the upload's size once past 64 MiB, and at ``max_duration_s``
  (12 h, ``TAPEVAULT_MAX_RECORDING_SECONDS``), checked as each frame is written: an hour of FLAC
  silence (1,140 times its size) fails at the ratio before it fills a disk. 256 leaves room for
  real speech codecs (Opus at 6 kbit/s decodes to 128 times its size at 48 kHz). A container
  that states its length (FLAC, MP4, Ogg, Matroska, MP3 with a Xing header) is also held to the
  same caps by :func:`probe`, before the upload is acknowledged.
* **Content-Type.** :func:`check_content_type`: non-audio types are refused; among audio formats
  the bytes decide.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, cast

import av
import av.error

from tapevault.core import wav
from tapevault.errors import InvalidAudio, QuotaExceeded, UnsupportedMediaType

ACCEPTED_CONTENT_TYPES: Final = frozenset(
    {
        "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave",
        "audio/mpeg", "audio/mp3", "audio/flac", "audio/x-flac", "audio/ogg", "audio/opus",
        "audio/webm", "video/webm",  # MediaRecorder labels audio-only WebM video/webm at times
        "audio/mp4", "audio/m4a", "audio/x-m4a", "audio/aac", "application/octet-stream",
    }
)  # fmt: skip
#: Declared types whose streams have no magic bytes (they may start mid-frame): when the sniffer
#: finds nothing, FFmpeg tries the declared format's demuxer.
_HEADERLESS: Final = {"audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/aac": "aac"}
#: Types that say nothing about the bytes, so the bytes decide: octet-stream, and the type curl
#: gives ``--data-binary`` when none is set (a user who forgot -H, not a form: a form body is
#: never audio, so it still ends in a 415 that names the header to send).
_UNLABELLED: Final = frozenset({"application/octet-stream", "application/x-www-form-urlencoded"})
_SEND: Final = (
    "send the file's own type (e.g. Content-Type: audio/wav or audio/mpeg), "
    "application/octet-stream, or multipart/form-data with the file as its one part"
)
_DEMUXERS: Final = {
    "wav": "wav", "mp3": "mp3", "aac": "aac", "flac": "flac", "ogg": "ogg",
    "webm": "matroska", "matroska": "matroska", "mp4": "mp4",
}  # fmt: skip
_OGG_CODECS: Final = ((b"OpusHead", "opus"), (b"\x01vorbis", "vorbis"), (b"\x7fFLAC", "flac"))
_RAW_STREAMS: Final = frozenset({"mp3", "aac", "flac"})  # source_format is the codec alone
_FORMATS_HINT: Final = "upload WAV, MP3, FLAC, Ogg (Opus/Vorbis), WebM (Opus) or M4A (AAC)"
DEFAULT_MAX_OUTPUT_BYTES: Final = 4 << 30
DEFAULT_MAX_DURATION_S: Final = 12 * 3600
DEFAULT_MAX_RATIO: Final = 256
RATIO_FLOOR_BYTES: Final = 64 << 20  # below this the ratio is not checked: small files are safe
_SLACK_S: Final = 0.5  # decoded may fall this much (+1%) short of a stated length: codec padding
_HEAD_SIZE: Final = 4096
_MAX_ID3_TAGS: Final = 4  # chained tags happen; more is not a real file


@dataclass(frozen=True, slots=True)
class Caps:
    """How much decoded audio one upload may become."""

    max_bytes: int
    max_seconds: float
    ratio: int | None = None  # set when ``max_bytes`` comes from the ratio to the upload's size
    quota: tuple[int, int] | None = None  # the tenant's (quota, bytes stored), if it has one

    @classmethod
    def for_upload(
        cls,
        size: int,
        max_output_bytes: int,
        max_seconds: float,
        ratio: int,
        quota: tuple[int, int] | None = None,
    ) -> Caps:
        by_ratio = max(size * ratio, RATIO_FLOOR_BYTES)
        absolute = min(max_output_bytes, wav.MAX_DATA_SIZE)
        if by_ratio < absolute:
            return cls(by_ratio, max_seconds, ratio, quota)
        return cls(absolute, max_seconds, None, quota)

    def check(self, data_size: int, byte_rate: int) -> None:
        """Refuse ``data_size`` bytes of decoded audio at ``byte_rate`` past any cap."""
        if self.quota is not None and self.quota[1] + data_size > self.quota[0]:
            raise QuotaExceeded(self.quota[0], self.quota[1], data_size)
        if data_size > self.max_bytes:
            if self.ratio is not None:
                raise InvalidAudio(
                    f"the upload decodes to more than {self.ratio} times its size "
                    f"({self.max_bytes} bytes): refused as a decompression bomb; "
                    "upload it uncompressed or split it"
                )
            raise InvalidAudio(f"decoded audio exceeds {self.max_bytes} bytes; split the recording")
        if data_size / byte_rate > self.max_seconds:
            raise InvalidAudio(
                f"audio longer than {self.max_seconds / 3600:g} h; split the recording"
            )


@dataclass(frozen=True)
class DecodedAudio:
    """Facts about the canonical WAV that :func:`decode_to_wav` wrote."""

    sample_rate: int
    channels: int
    bits_per_sample: int
    frames: int
    data_size: int
    sha256: str  # of the whole dst file, header included
    source_format: str  # e.g. "wav/pcm_s16le", "mp3", "ogg/opus", "webm/opus", "mp4/aac"


def sniff(head: bytes) -> str | None:
    """The container the first bytes of a file announce, or None when they announce none we take.

    One of "wav", "mp3", "aac" (ADTS), "flac", "ogg/opus", "ogg/vorbis", "ogg/flac", "ogg",
    "webm", "matroska", "mp4". ID3v2 tags are skipped; what they hide is taken for MP3 when
    ``head`` does not reach past them.
    """
    tagged = False
    for _ in range(_MAX_ID3_TAGS):
        if head[:3] != b"ID3" or len(head) < 10:
            break
        tagged, head = True, head[_id3_end(head) :]
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS" and len(head) >= 27:
        body = head[27 + head[26] :]  # the first packet follows the segment table
        return next((f"ogg/{c}" for magic, c in _OGG_CODECS if body.startswith(magic)), "ogg")
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:64] else "matroska"  # the EBML DocType
    if head[4:8] == b"ftyp":
        return "mp4"
    if len(head) >= 3 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
        if layer == 0 and version & 2 and (head[2] >> 2) & 0xF < 13:
            return "aac"  # ADTS: 12-bit sync, layer 00
        if layer != 0 and version != 1 and head[2] >> 4 != 0xF and (head[2] >> 2) & 3 != 3:
            return "mp3"  # MPEG audio frame sync with a valid bitrate and sample rate
    return "mp3" if tagged else None


def check_content_type(declared: str | None, head: bytes) -> None:
    """Refuse a body whose declared Content-Type or first bytes say it is not audio we take.

    * A declared type not in :data:`ACCEPTED_CONTENT_TYPES` (parameters ignored) is refused with
      :class:`UnsupportedMediaType`, even over a valid WAV: the client sent the wrong thing.
    * When the bytes are a format we decode, they decide: ``audio/mpeg`` over a FLAC body is
      decoded as FLAC. Mislabelled audio is common (``new Blob(chunks, {type: "audio/wav"})``
      over MediaRecorder's WebM) and never ambiguous, and refusing it would lose the recording.
    * Unrecognised bytes are :class:`InvalidAudio` under a declared audio type that has a magic
      number (the body is broken), passed on to FFmpeg under ``audio/mpeg``/``audio/aac`` (raw
      streams may start mid-frame), and :class:`UnsupportedMediaType` when no type, or only
      one that says nothing about the bytes (``application/octet-stream``, or curl's default
      ``application/x-www-form-urlencoded``), was declared.
    """
    _demuxer_for(declared, head, tagged=False)


def decode_to_wav(
    src: Path,
    dst: Path,
    *,
    declared_type: str | None = None,
    max_channels: int = 2,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    max_ratio: int = DEFAULT_MAX_RATIO,
    quota: tuple[int, int] | None = None,
) -> DecodedAudio:
    """Decode ``src`` into a canonical PCM WAV at ``dst``, a node-local temporary file (not
    fsynced: the caller promotes it into the object store, which makes its copy durable).

    Raises :class:`InvalidAudio` (or :class:`UnsupportedMediaType`) for anything the client must
    fix, and :class:`QuotaExceeded` when the audio would pass ``quota`` (the tenant's quota and
    what it stores already). ``dst`` is removed when that happens.
    """
    if max_channels not in (1, 2):
        raise ValueError(f"max_channels must be 1 or 2, not {max_channels}")
    with src.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        caps = Caps.for_upload(size, max_output_bytes, max_duration_s, max_ratio, quota)
        if size == 0:
            raise InvalidAudio(f"empty body: {_FORMATS_HINT}")
        offset, head = _read_head(f)
        kind = _demuxer_for(declared_type, head, tagged=offset > 0)
        info = None
        if kind == "wav":
            _check_wav_claim(f, size)
            with contextlib.suppress(InvalidAudio):  # float, μ-law...: FFmpeg decodes those
                info = wav.parse_wav(f, size)
        try:
            with dst.open("w+b") as out:
                if info is not None and info.fmt.channels <= max_channels:
                    result = _copy_pcm(f, info, out, caps)
                else:
                    exact = kind not in ("mp3", "aac") or (kind == "mp3" and _has_toc(f, offset))
                    exact = exact and (kind != "wav" or _wav_states_its_length(f, size))
                    result = _decode(src, kind, out, max_channels, caps, exact)
        except BaseException:
            dst.unlink(missing_ok=True)
            raise
    return result


def probe(
    src: Path,
    declared_type: str | None = None,
    *,
    max_channels: int = 2,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    max_ratio: int = DEFAULT_MAX_RATIO,
) -> str:
    """Check, cheaply, that an upload is audio we can decode; returns its source format.

    Runs in the request before an upload is acknowledged: the same content-type rules and the same
    sniffed demuxer as :func:`decode_to_wav` (FFmpeg never guesses), then a plain PCM WAV is
    parsed whole and anything else must yield its first decoded audio frame. A length the file
    states is held to the decode's caps (a bomb that says what it is fails here). Damage further
    in, and bombs that state no length, are found by the full decode in the worker.
    """
    with src.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise InvalidAudio(f"empty body: {_FORMATS_HINT}")
        caps = Caps.for_upload(size, max_output_bytes, max_duration_s, max_ratio)
        offset, head = _read_head(f)
        kind = _demuxer_for(declared_type, head, tagged=offset > 0)
        exact = kind not in ("mp3", "aac") or (kind == "mp3" and _has_toc(f, offset))
        if kind == "wav":
            _check_wav_claim(f, size)
            info = None
            with contextlib.suppress(InvalidAudio):
                info = wav.parse_wav(f, size)
            if info is not None:
                caps.check(info.data_size, info.fmt.byte_rate)
                return f"wav/{_pcm_name(info.fmt.bits_per_sample)}"
            exact = _wav_states_its_length(f, size)
    try:
        with av.open(f"file:{src}", format=_DEMUXERS[kind], metadata_errors="replace") as box:
            if not box.streams.audio:
                what = "only video" if box.streams.video else "no audio stream"
                raise UnsupportedMediaType(f"the {kind} file holds {what}; {_FORMATS_HINT}")
            stream = box.streams.audio[0]
            ctx = cast("av.AudioCodecContext | None", stream.codec_context)
            if ctx is None:
                raise InvalidAudio(f"the audio codec in this {kind} file is not supported")
            source = ctx.codec.canonical_name
            stated_s = _stated_seconds(box, stream, exact)
            if stated_s is not None and ctx.sample_rate > 0:
                width = 3 if ctx.codec.lossless and ctx.format.bytes > 2 else 2
                byte_rate = ctx.sample_rate * max(1, min(ctx.channels, max_channels)) * width
                caps.check(int(stated_s * byte_rate), byte_rate)
            for packet in box.demux(stream):
                for frame in packet.decode():
                    if frame.samples:
                        return source if kind in _RAW_STREAMS else f"{kind}/{source}"
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InvalidAudio(f"cannot decode the {kind} upload: {reason}") from exc
    raise InvalidAudio(f"no audio could be decoded from the {kind} upload")


def _stated_seconds(
    box: av.container.InputContainer, stream: av.AudioStream, exact: bool
) -> float | None:
    """The length the container states, when it states one it is held to (``exact``)."""
    if exact and stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if exact and box.duration is not None:
        return float(box.duration / av.time_base)
    return None


def _pcm_name(bits: int) -> str:
    return "pcm_u8" if bits == 8 else f"pcm_s{bits}le"


def _demuxer_for(declared: str | None, head: bytes, *, tagged: bool) -> str:
    """The demuxer for a body starting with ``head`` (after ``tagged``: ID3v2 tags)."""
    media_type = (declared or "").split(";", 1)[0].strip().lower()
    if media_type and media_type not in ACCEPTED_CONTENT_TYPES | _UNLABELLED:
        raise UnsupportedMediaType(
            f"Content-Type {media_type} is not audio tapevault accepts; {_FORMATS_HINT}: {_SEND}"
        )
    if not head and not tagged:
        raise InvalidAudio(f"empty body: {_FORMATS_HINT}")
    kind = sniff(head) or ("mp3" if tagged else None)
    if kind is not None:
        return kind.split("/", 1)[0]
    if media_type in _HEADERLESS:
        return _HEADERLESS[media_type]
    if media_type and media_type not in _UNLABELLED:
        raise InvalidAudio(f"body is not {media_type}: its first bytes match no audio format")
    raise UnsupportedMediaType(
        f"unrecognised media: the body is not audio; {_FORMATS_HINT}: {_SEND}"
    )


def _id3_end(head: bytes) -> int:
    """Offset after the ID3v2 tag at the start of ``head`` (its size is 4 syncsafe bytes)."""
    size = 0
    for byte in head[6:10]:
        size = size << 7 | byte & 0x7F
    return 10 + size + (10 if head[5] & 0x10 else 0)  # flag 0x10: a 10-byte footer follows


def _read_head(f: BinaryIO) -> tuple[int, bytes]:
    """Where the first non-ID3 bytes start, and those bytes (tags of any size skipped)."""
    offset = 0
    for _ in range(_MAX_ID3_TAGS):
        f.seek(offset)
        head = f.read(_HEAD_SIZE)
        if head[:3] != b"ID3" or len(head) < 10:
            return offset, head
        offset += _id3_end(head)
    return offset, head


def _has_toc(f: BinaryIO, offset: int) -> bool:
    """Whether the first MP3 frame is a Xing/Info/VBRI header that states the exact length."""
    f.seek(offset)
    first = f.read(512)
    return any(tag in first for tag in (b"Xing", b"Info", b"VBRI"))


def _wav_states_its_length(f: BinaryIO, size: int) -> bool:
    """Whether a WAV's data size is a real claim the demuxer can hold it to: not a placeholder
    (0, 0xFFFFFFFF) a streaming writer never patched, and not within the tolerated shortfall of
    :func:`tapevault.core.wav.check_declared_size` (the audio then runs to the end of the file,
    as :mod:`tapevault.core.wav` also accepts)."""
    sizes = wav.data_chunk_sizes(f, size)
    if sizes is None:
        return True  # RF64 states its real size in ds64; RIFX is big-endian
    declared, present = sizes
    return not wav.is_streaming_placeholder(declared) and declared <= present


def _check_wav_claim(f: BinaryIO, size: int) -> None:
    """Refuse a WAV whose data chunk claims more bytes than the body holds, whatever its
    encoding: before the 202, not in the worker after it."""
    sizes = wav.data_chunk_sizes(f, size)
    if sizes is not None:
        wav.check_declared_size(*sizes)


def _copy_pcm(f: BinaryIO, info: wav.WavInfo, out: BinaryIO, caps: Caps) -> DecodedAudio:
    caps.check(info.data_size, info.fmt.byte_rate)
    digest = hashlib.sha256()
    for chunk in wav.write_canonical(f, info):
        digest.update(chunk)
        out.write(chunk)
    bits = info.fmt.bits_per_sample
    source = f"wav/{_pcm_name(bits)}"
    return _facts(info.fmt, info.data_size, digest.hexdigest(), source)


def _facts(fmt: wav.PcmFormat, data_size: int, sha256: str, source: str) -> DecodedAudio:
    frames = data_size // fmt.block_align
    return DecodedAudio(
        fmt.sample_rate, fmt.channels, fmt.bits_per_sample, frames, data_size, sha256, source
    )


class _PcmWriter:
    """Appends decoded frames to ``out`` as packed PCM, in the format the first frame fixes."""

    def __init__(self, out: BinaryIO, bits: int, max_channels: int, caps: Caps):
        self.out, self.bits, self.max_channels, self.caps = out, bits, max_channels, caps
        self.fmt: wav.PcmFormat | None = None
        self.data_size = 0
        self._resampler: av.AudioResampler | None = None
        self._shape = (0, 0)  # the first frame's rate and channel count

    def add(self, frame: av.AudioFrame | None) -> None:
        """Convert and write ``frame``; None flushes what the resampler holds."""
        shape = (frame.sample_rate, frame.layout.nb_channels) if frame else self._shape
        if self._resampler is None and frame is not None:
            self._start(*shape)
        elif shape != self._shape:
            raise InvalidAudio(
                f"the audio changes mid-stream from {self._shape[0]} Hz/{self._shape[1]} ch to "
                f"{shape[0]} Hz/{shape[1]} ch; upload one recording per file"
            )
        if self._resampler is None or self.fmt is None:
            return
        width = 2 if self.bits == 16 else 4
        for pcm in self._resampler.resample(frame):
            # Planes are padded past the samples: take exactly the interleaved samples.
            data: memoryview | bytearray = memoryview(pcm.planes[0])
            data = data[: pcm.samples * self.fmt.channels * width]
            if self.bits == 24:
                data = bytearray(data)
                del data[::4]  # drop the low byte of each little-endian s32: its top 24 bits stay
            self.caps.check(self.data_size + len(data), self.fmt.byte_rate)
            self.out.write(data)
            self.data_size += len(data)

    def _start(self, rate: int, channels: int) -> None:
        self._shape = (rate, channels)
        if not wav.MIN_SAMPLE_RATE <= rate <= wav.MAX_SAMPLE_RATE:
            raise InvalidAudio(
                f"sample rate {rate} Hz out of range {wav.MIN_SAMPLE_RATE}-{wav.MAX_SAMPLE_RATE}; "
                "resample the recording"
            )
        if channels < 1:
            raise InvalidAudio("the audio stream has no channels")
        self.fmt = wav.PcmFormat(rate, min(channels, self.max_channels), self.bits)
        layout = "mono" if self.fmt.channels == 1 else "stereo"
        self._resampler = av.AudioResampler("s16" if self.bits == 16 else "s32", layout, rate)


def _decode(
    src: Path, kind: str, out: io.BufferedRandom, max_ch: int, caps: Caps, exact: bool
) -> DecodedAudio:
    """Decode ``src`` with FFmpeg into ``out``; ``exact``: the container states its true length."""
    out.write(bytes(wav.CANONICAL_HEADER_SIZE))  # a placeholder until the sizes are known
    try:
        with av.open(f"file:{src}", format=_DEMUXERS[kind], metadata_errors="replace") as box:
            if not box.streams.audio:
                what = "only video" if box.streams.video else "no audio stream"
                raise UnsupportedMediaType(f"the {kind} file holds {what}; {_FORMATS_HINT}")
            stream = box.streams.audio[0]
            # PyAV leaves the context None when FFmpeg has no decoder for the codec.
            ctx = cast("av.AudioCodecContext | None", stream.codec_context)
            if ctx is None:
                raise InvalidAudio(f"the audio codec in this {kind} file is not supported")
            source = ctx.codec.canonical_name
            source = source if kind in _RAW_STREAMS else f"{kind}/{source}"
            bits = 24 if ctx.codec.lossless and ctx.format.bytes > 2 else 16
            stated_s = _stated_seconds(box, stream, exact)
            writer = _PcmWriter(out, bits, max_ch, caps)
            for packet in box.demux(stream):
                if packet.is_corrupt and exact:  # a short read: the file ends before it says
                    raise InvalidAudio(f"the {source} stream is cut short or damaged")
                for frame in packet.decode():
                    writer.add(frame)
            writer.add(None)
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InvalidAudio(
            f"cannot decode the {kind} upload, corrupt or truncated: {reason}"
        ) from exc
    fmt, data_size = writer.fmt, writer.data_size
    if fmt is None or data_size == 0:
        raise InvalidAudio(f"no audio could be decoded from the {kind} upload")
    decoded_s = data_size / fmt.byte_rate
    if stated_s is not None and decoded_s < stated_s * 0.99 - _SLACK_S:
        raise InvalidAudio(
            f"the upload looks truncated: it states {stated_s:.2f} s of audio "
            f"but only {decoded_s:.2f} s could be decoded"
        )
    if data_size & 1:
        out.write(b"\x00")
    out.seek(0)
    out.write(wav.canonical_header(fmt, data_size))
    out.seek(0)  # the header came last, so the hash needs a second pass over the file
    sha256 = hashlib.file_digest(out, "sha256").hexdigest()
    return _facts(fmt, data_size, sha256, source)
