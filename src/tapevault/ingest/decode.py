"""Decode an uploaded recording, whatever its format, into the canonical PCM WAV tapevault stores.

The upload is already spooled to a file; it is decoded frame by frame straight into ``dst``, so
memory stays bounded whatever its length. Every failure the client can fix is an
:class:`~tapevault.errors.InvalidAudio` (or its :class:`~tapevault.errors.UnsupportedMediaType`
leaf) saying what is wrong; no ``av`` exception escapes. ``dst`` is removed when decoding fails.

Decisions, and why:

* **Which demuxer.** :func:`sniff` picks it from the first bytes (WAV, MP3, ADTS AAC, FLAC, Ogg,
  WebM/Matroska, MP4/M4A); FFmpeg never probes. Only these seven demuxers ever see an upload, so
  the ones that open other files or URLs (HLS, concat...) are out of reach.
* **Fast path.** A WAV that :func:`~tapevault.core.wav.parse_wav` accepts (8/16/24-bit PCM) is
  copied bit-exact without FFmpeg.
* **Sample rate.** The decoder's rate, never resampled; 8000-48000 Hz or rejected. Opus always
  decodes at 48 kHz whatever rate the encoder was fed, so Opus is stored at 48 kHz.
* **Channels.** Mono and stereo are kept; more than ``max_channels`` are downmixed with FFmpeg's
  standard matrix: a 4-microphone or 5.1 recording is still worth keeping, and the stored format
  is mono or stereo only. ``max_channels=1`` stores everything as mono.
* **Bits.** 24 when the source is lossless with more than 16 bits (24/32-bit PCM, float WAV,
  24-bit FLAC or ALAC; 32-bit integer keeps its top 24 bits), else 16: lossy codecs, μ-law and
  A-law carry nothing beyond 16 bits, and 24 would cost half as much storage again for nothing.
* **Truncated or corrupt: nothing half-written.** The upload is rejected when FFmpeg reports an
  error while demuxing or decoding (a cut FLAC, Ogg Vorbis or ADTS frame), when the demuxer flags a
  packet as corrupt (a WAV data chunk shorter than its header says), or when the decoded audio is
  more than 0.5 s + 1% shorter than a length the container states (MP4 moov, FLAC STREAMINFO,
  Matroska Duration, MP3 Xing/Info/VBRI, Ogg end granule). MP3 without a Xing header and raw ADTS
  are not compared: FFmpeg's length for them is a bitrate estimate, wrong for VBR. Formats that
  state no length (those two, and MediaRecorder's WebM) cut exactly between packets cannot be told
  from a complete file, and are stored as what they hold.
* **Bombs.** Decoded output is capped by ``max_output_bytes`` (and the 4 GiB a WAV header can
  describe) and ``max_duration_s`` (12 h); past either the upload is rejected.
* **Content-Type.** See :func:`check_content_type`: a non-audio type is refused, and among the
  audio formats the bytes decide.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import av
import av.error

from tapevault.core.wav import (
    CANONICAL_HEADER_SIZE,
    MAX_DATA_SIZE,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    PcmFormat,
    WavInfo,
    canonical_header,
    parse_wav,
    write_canonical,
)
from tapevault.errors import InvalidAudio, UnsupportedMediaType

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
_DEMUXERS: Final = {
    "wav": "wav", "mp3": "mp3", "aac": "aac", "flac": "flac", "ogg": "ogg",
    "webm": "matroska", "matroska": "matroska", "mp4": "mp4",
}  # fmt: skip
_OGG_CODECS: Final = ((b"OpusHead", "opus"), (b"\x01vorbis", "vorbis"), (b"\x7fFLAC", "flac"))
_RAW_STREAMS: Final = frozenset({"mp3", "aac", "flac"})  # source_format is the codec alone
_FORMATS_HINT: Final = "upload WAV, MP3, FLAC, Ogg (Opus/Vorbis), WebM (Opus) or M4A (AAC)"
DEFAULT_MAX_OUTPUT_BYTES: Final = 4 << 30
DEFAULT_MAX_DURATION_S: Final = 12 * 3600
_SLACK_S: Final = 0.5  # decoded may fall this much (+1%) short of a stated length: codec padding
_HEAD_SIZE: Final = 4096


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
    "webm", "matroska", "mp4". A leading ID3v2 tag is skipped when ``head`` reaches past it.
    """
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:3] == b"ID3" and len(head) >= 10:
        end = _id3_end(head)
        return (sniff(head[end:]) if len(head) - end >= 12 else None) or "mp3"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS" and len(head) >= 27:
        body = head[27 + head[26] :]
        for magic, codec in _OGG_CODECS:
            if body.startswith(magic):
                return f"ogg/{codec}"
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:64] else "matroska"
    if head[4:8] == b"ftyp":
        return "mp4"
    if len(head) >= 3 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
        if layer == 0 and version & 2 and (head[2] >> 2) & 0xF < 13:
            return "aac"  # ADTS: 12-bit sync, layer 00
        if layer != 0 and version != 1 and head[2] >> 4 != 0xF and (head[2] >> 2) & 3 != 3:
            return "mp3"  # MPEG audio frame sync with a valid bitrate and sample rate
    return None


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
      ``application/octet-stream``, was declared.
    """
    _demuxer_for(declared, head)


def decode_to_wav(
    src: Path,
    dst: Path,
    *,
    declared_type: str | None = None,
    max_channels: int = 2,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
) -> DecodedAudio:
    """Decode ``src`` into a canonical PCM WAV at ``dst`` (created, fsynced; the caller renames).

    Raises :class:`InvalidAudio` (or :class:`UnsupportedMediaType`) for anything the client must
    fix. ``dst`` is removed when that happens.
    """
    if max_channels not in (1, 2):
        raise ValueError(f"max_channels must be 1 or 2, not {max_channels}")
    caps = (min(max_output_bytes, MAX_DATA_SIZE), max_duration_s)
    with src.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise InvalidAudio(f"empty body: {_FORMATS_HINT}")
        offset, head = _read_head(f)
        kind = _demuxer_for(declared_type, head)
        wav = _try_parse_wav(f, size) if kind == "wav" else None
        try:
            with dst.open("w+b") as out:
                if wav is not None and wav.fmt.channels <= max_channels:
                    result = _copy_pcm(f, wav, out, caps)
                else:
                    exact = kind not in ("mp3", "aac") or (kind == "mp3" and _has_toc(f, offset))
                    result = _decode(src, kind, out, max_channels, caps, exact)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            dst.unlink(missing_ok=True)
            raise
    return result


def _demuxer_for(declared: str | None, head: bytes) -> str:
    media_type = (declared or "").split(";", 1)[0].strip().lower()
    if media_type and media_type not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media_type} is not audio tapevault accepts; {_FORMATS_HINT}"
        )
    if not head:
        raise InvalidAudio(f"empty body: {_FORMATS_HINT}")
    kind = sniff(head)
    if kind is not None:
        return kind.split("/", 1)[0]
    if media_type in _HEADERLESS:
        return _HEADERLESS[media_type]
    if media_type and media_type != "application/octet-stream":
        raise InvalidAudio(f"body is not {media_type}: its first bytes match no audio format")
    raise UnsupportedMediaType(f"unrecognised media: the body is not audio; {_FORMATS_HINT}")


def _id3_end(head: bytes) -> int:
    """Offset after the ID3v2 tag at the start of ``head`` (its size is 4 syncsafe bytes)."""
    size = 0
    for byte in head[6:10]:
        size = size << 7 | byte & 0x7F
    return 10 + size + (10 if head[5] & 0x10 else 0)  # flag 0x10: a 10-byte footer follows


def _read_head(f: BinaryIO) -> tuple[int, bytes]:
    """Where the first non-ID3 bytes start, and those bytes (tags of any size skipped)."""
    offset = 0
    for _ in range(4):  # chained tags happen; more is not a real file
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


def _try_parse_wav(f: BinaryIO, size: int) -> WavInfo | None:
    try:
        return parse_wav(f, size)
    except InvalidAudio:
        return None  # float, μ-law, A-law, 32-bit, >2 channels...: FFmpeg decodes those


def _check_caps(data_size: int, fmt: PcmFormat, limit: int, max_duration_s: float) -> None:
    if data_size > limit:
        raise InvalidAudio(f"decoded audio exceeds {limit} bytes; split the recording")
    if data_size / fmt.byte_rate > max_duration_s:
        raise InvalidAudio(f"audio longer than {max_duration_s / 3600:g} h; split the recording")


def _copy_pcm(f: BinaryIO, wav: WavInfo, out: BinaryIO, caps: tuple[int, float]) -> DecodedAudio:
    _check_caps(wav.data_size, wav.fmt, *caps)
    digest = hashlib.sha256()
    for chunk in write_canonical(f, wav):
        digest.update(chunk)
        out.write(chunk)
    sign = "u" if wav.fmt.bits_per_sample == 8 else "s"
    source = f"wav/pcm_{sign}{wav.fmt.bits_per_sample}" + ("le" if sign == "s" else "")
    return _facts(wav.fmt, wav.data_size, digest.hexdigest(), source)


def _facts(fmt: PcmFormat, data_size: int, sha256: str, source: str) -> DecodedAudio:
    return DecodedAudio(
        sample_rate=fmt.sample_rate,
        channels=fmt.channels,
        bits_per_sample=fmt.bits_per_sample,
        frames=data_size // fmt.block_align,
        data_size=data_size,
        sha256=sha256,
        source_format=source,
    )


class _PcmWriter:
    """Turns decoded frames into packed PCM appended to ``out``, fixing the format on frame one."""

    def __init__(self, out: BinaryIO, bits: int, max_channels: int, caps: tuple[int, float]):
        self.out, self.bits, self.max_channels, self.caps = out, bits, max_channels, caps
        self.fmt: PcmFormat | None = None
        self.data_size = 0
        self._resampler: av.AudioResampler | None = None
        self._source: tuple[int, int] = (0, 0)  # the first frame's rate and channel count

    def add(self, frame: av.AudioFrame) -> None:
        shape = (frame.sample_rate, frame.layout.nb_channels)
        if self._resampler is None:
            self._start(shape)
        elif shape != self._source:
            raise InvalidAudio(
                f"the audio changes from {self._source[0]} Hz x {self._source[1]} channels "
                f"to {shape[0]} Hz x {shape[1]} mid-stream; upload one recording per file"
            )
        assert self._resampler is not None
        for pcm in self._resampler.resample(frame):
            self._write(pcm)

    def finish(self) -> None:
        if self._resampler is not None:
            for pcm in self._resampler.resample(None):
                self._write(pcm)

    def _start(self, shape: tuple[int, int]) -> None:
        rate, channels = shape
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise InvalidAudio(
                f"sample rate {rate} Hz out of range {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE}; "
                "resample the recording"
            )
        if channels < 1:
            raise InvalidAudio("the audio stream has no channels")
        out_channels = min(channels, self.max_channels)
        self.fmt = PcmFormat(rate, out_channels, self.bits)
        self._source = shape
        layout = "mono" if out_channels == 1 else "stereo"
        self._resampler = av.AudioResampler("s16" if self.bits == 16 else "s32", layout, rate)

    def _write(self, pcm: av.AudioFrame) -> None:
        assert self.fmt is not None
        width = 2 if self.bits == 16 else 4
        # The plane is padded past the samples; take exactly the interleaved samples.
        view = memoryview(pcm.planes[0])[: pcm.samples * self.fmt.channels * width]
        data: memoryview | bytearray = view
        if self.bits == 24:
            data = bytearray(view)
            del data[::4]  # drop the low byte of each little-endian s32, keeping its top 24 bits
        _check_caps(self.data_size + len(data), self.fmt, *self.caps)
        self.out.write(data)
        self.data_size += len(data)


def _decode(
    src: Path, kind: str, out: BinaryIO, max_channels: int, caps: tuple[int, float], exact: bool
) -> DecodedAudio:
    """Decode ``src`` with FFmpeg into ``out``; ``exact``: the container states its true length."""
    out.write(bytes(CANONICAL_HEADER_SIZE))  # a placeholder until the sizes are known
    try:
        with av.open(f"file:{src}", format=_DEMUXERS[kind], metadata_errors="replace") as box:
            if not box.streams.audio:
                what = "only video" if box.streams.video else "no audio stream"
                raise UnsupportedMediaType(f"the {kind} file holds {what}; {_FORMATS_HINT}")
            stream = box.streams.audio[0]
            codec = stream.codec_context.codec
            source = codec.canonical_name
            source = source if kind in _RAW_STREAMS else f"{kind}/{source}"
            bits = 24 if codec.lossless and stream.codec_context.format.bytes > 2 else 16
            stated_s: float | None = None
            if exact and stream.duration is not None and stream.time_base is not None:
                stated_s = float(stream.duration * stream.time_base)
            elif exact and box.duration is not None:
                stated_s = box.duration / av.time_base
            writer = _PcmWriter(out, bits, max_channels, caps)
            for packet in box.demux(stream):
                if packet.is_corrupt:
                    raise InvalidAudio(f"the {source} stream is cut short or damaged")
                for frame in packet.decode():
                    writer.add(frame)
            writer.finish()
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
    out.write(canonical_header(fmt, data_size))
    out.seek(0)  # the header came last, so the hash needs a second pass over the file
    sha256 = hashlib.file_digest(out, "sha256").hexdigest()  # type: ignore[arg-type]
    return _facts(fmt, data_size, sha256, source)
