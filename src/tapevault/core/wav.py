"""RIFF/WAVE parsing and the canonical PCM WAV that tapevault stores.

An upload is spooled to disk first; :func:`parse_wav` then walks its chunks with seeks, so a
multi-gigabyte body costs a few small reads, never its size in memory. Every size in the file is
treated as hostile: nothing is allocated from a declared size, the chunk walk is bounded, and each
failure is an :class:`~tapevault.errors.InvalidAudio` whose message tells the client what to fix.

What is accepted: integer PCM (format tag 1, or WAVE_FORMAT_EXTENSIBLE with the PCM subformat),
8/16/24-bit, mono or stereo, 8000-48000 Hz. What is tolerated, because real writers produce it: a
wrong RIFF size, odd chunks with or without their pad byte, LIST/fact/other chunks anywhere, and a
data size of 0 or 0xFFFFFFFF left by streaming writers that never patched their header (the audio
is then whatever follows, up to the end of the file). A trailing partial frame is dropped. A data
size at most ``TRUNCATION_TOLERANCE`` (64) bytes over the file is taken as what is present; a
larger claim (a header saying 4 GB over 1 KB of audio) is refused, for any encoding, before the
upload is acknowledged.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

from tapevault.errors import InvalidAudio

WAVE_FORMAT_PCM: Final = 0x0001
WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE

MIN_SAMPLE_RATE: Final = 8000
MAX_SAMPLE_RATE: Final = 48000
SUPPORTED_BITS: Final = (8, 16, 24)
SUPPORTED_CHANNELS: Final = (1, 2)

CANONICAL_HEADER_SIZE: Final = 44
#: The largest data chunk a canonical header can describe (RIFF sizes are 32-bit).
MAX_DATA_SIZE: Final = 0xFFFFFFFF - (CANONICAL_HEADER_SIZE - 8) - 1

#: A data chunk may claim up to this many bytes more than the file holds and still be taken as
#: what is there: a missing pad byte, a last partial frame, a writer that counted its own header.
#: Beyond it the file was cut short (a transfer that stopped, a header that lies) and is refused
#: before it is acknowledged; streaming writers' placeholders (0, 0xFFFFFFFF) are not claims.
TRUNCATION_TOLERANCE: Final = 64

MAX_FMT_SIZE: Final = 1024
MAX_CHUNKS: Final = 1024
COPY_CHUNK: Final = 1 << 20

_STREAMING_PLACEHOLDERS: Final = (0, 0xFFFFFFFF)
# KSDATAFORMAT_SUBTYPE_*: the format tag in the first two bytes, then this fixed tail.
_SUBFORMAT_TAIL: Final = bytes.fromhex("000000001000800000aa00389b71")

_TAG_NAMES: Final = {
    0x0002: "Microsoft ADPCM",
    0x0003: "IEEE float",
    0x0006: "A-law",
    0x0007: "μ-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG",
    0x0055: "MPEG Layer 3",
    0x00FF: "AAC",
    0x1610: "AAC",
    0xF1AC: "FLAC",
}
_UPLOAD_HINT: Final = "upload 8/16/24-bit PCM"


@dataclass(frozen=True, slots=True)
class PcmFormat:
    """The shape of interleaved little-endian integer PCM samples."""

    sample_rate: int
    channels: int
    bits_per_sample: int

    @property
    def block_align(self) -> int:
        """Bytes per frame (one sample for every channel)."""
        return self.channels * (self.bits_per_sample // 8)

    @property
    def byte_rate(self) -> int:
        """Bytes per second of audio."""
        return self.sample_rate * self.block_align


@dataclass(frozen=True, slots=True)
class WavInfo:
    """Where the audio of a parsed WAV file is, and what it is."""

    fmt: PcmFormat
    data_offset: int
    data_size: int  # actual usable bytes, whole frames only

    @property
    def frames(self) -> int:
        """Number of whole frames in the data."""
        return self.data_size // self.fmt.block_align

    @property
    def duration_ms(self) -> int:
        """Duration in milliseconds, rounded to the nearest."""
        return round(self.frames * 1000 / self.fmt.sample_rate)


def parse_wav(f: BinaryIO, file_size: int) -> WavInfo:
    """Validate the WAV file in ``f`` (``file_size`` bytes long) and locate its audio.

    Raises :class:`InvalidAudio` for anything tapevault does not accept.
    """
    if file_size <= 0:
        raise InvalidAudio("empty body: upload a WAV file")
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[0:4] != b"RIFF" or head[8:12] != b"WAVE":
        if head[0:4] == b"RF64":
            raise InvalidAudio("RF64 WAV is not supported; upload a standard RIFF WAV under 4 GiB")
        if head[0:4] == b"RIFX":
            raise InvalidAudio("big-endian RIFX WAV is not supported; upload a RIFF WAV")
        raise InvalidAudio("not a WAV file: missing RIFF/WAVE header")

    fmt: PcmFormat | None = None
    data: tuple[int, int] | None = None  # (offset, usable bytes before frame rounding)
    pos = 12
    for _ in range(MAX_CHUNKS):
        if fmt is not None and data is not None:
            break
        if pos + 8 > file_size:
            break
        chunk_id, size = _chunk_header(f, pos)
        body = pos + 8
        if chunk_id == b"fmt ":
            if fmt is not None:
                raise InvalidAudio("WAV file has more than one fmt chunk")
            fmt = _parse_fmt(f, body, size, file_size)
        elif chunk_id == b"data":
            if data is not None:
                raise InvalidAudio("WAV file has more than one data chunk")
            present = file_size - body
            if size in _STREAMING_PLACEHOLDERS:
                if size == 0 and _looks_like_chunk(f, body, file_size):
                    data = (body, 0)  # a really empty data chunk with more chunks after it
                else:
                    data = (body, present)
                    break  # the audio runs to the end of the file; nothing after it to find
            elif size > present:
                check_declared_size(size, present)
                data = (body, present)
            else:
                data = (body, size)
        pos = _next_chunk(f, body, size, file_size)
    else:
        if fmt is None or data is None:
            raise InvalidAudio(f"WAV file has more than {MAX_CHUNKS} chunks before its audio")

    if fmt is None:
        raise InvalidAudio("missing fmt chunk: the WAV file does not say how its audio is encoded")
    if data is None:
        raise InvalidAudio("missing data chunk: the WAV file holds no audio")
    offset, size = data
    usable = size - size % fmt.block_align
    if usable == 0:
        raise InvalidAudio("WAV file has no audio samples")
    if usable > MAX_DATA_SIZE:
        raise InvalidAudio(f"WAV audio data exceeds {MAX_DATA_SIZE} bytes; split the recording")
    return WavInfo(fmt=fmt, data_offset=offset, data_size=usable)


def check_declared_size(declared: int, present: int) -> None:
    """Refuse a data chunk that claims more than :data:`TRUNCATION_TOLERANCE` bytes beyond the
    file (a streaming placeholder claims nothing)."""
    if declared not in _STREAMING_PLACEHOLDERS and declared - present > TRUNCATION_TOLERANCE:
        raise InvalidAudio(
            f"WAV data chunk truncated: header declares {declared} bytes, {present} present"
        )


def data_chunk_sizes(f: BinaryIO, file_size: int) -> tuple[int, int] | None:
    """(declared, present) bytes of the first data chunk of a little-endian RIFF WAV, whatever
    its encoding, or None when there is none to find. Only the chunk headers are read."""
    f.seek(0)
    if f.read(4) != b"RIFF":
        return None  # RF64 states its real size in ds64; RIFX is big-endian
    pos = 12
    for _ in range(MAX_CHUNKS):
        if pos + 8 > file_size:
            return None
        chunk_id, size = _chunk_header(f, pos)
        if chunk_id == b"data":
            return size, file_size - pos - 8
        pos += 8 + size + (size & 1)
    return None


def is_streaming_placeholder(declared: int) -> bool:
    """Whether a data size is one a streaming writer leaves when it never patches its header."""
    return declared in _STREAMING_PLACEHOLDERS


def canonical_header(fmt: PcmFormat, data_size: int) -> bytes:
    """The 44-byte RIFF/WAVE header (PCM, format tag 1) for ``data_size`` bytes of audio.

    An odd ``data_size`` is followed by a pad byte, which the RIFF size counts;
    :func:`canonical_size` gives the resulting file size.
    """
    if not 0 <= data_size <= MAX_DATA_SIZE:
        raise ValueError(f"data_size {data_size} out of range 0-{MAX_DATA_SIZE}")
    riff_size = CANONICAL_HEADER_SIZE - 8 + data_size + (data_size & 1)
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,
        WAVE_FORMAT_PCM,
        fmt.channels,
        fmt.sample_rate,
        fmt.byte_rate,
        fmt.block_align,
        fmt.bits_per_sample,
        b"data",
        data_size,
    )


def canonical_size(data_size: int) -> int:
    """Bytes in the canonical file for ``data_size`` bytes of audio (header, data, pad byte)."""
    return CANONICAL_HEADER_SIZE + data_size + (data_size & 1)


def write_canonical(src: BinaryIO, info: WavInfo) -> Iterator[bytes]:
    """Yield the canonical WAV for ``info``: the header, then the audio read from ``src``.

    The audio is read in chunks of at most 1 MiB, so the caller can stream it into storage.
    """
    yield canonical_header(info.fmt, info.data_size)
    src.seek(info.data_offset)
    remaining = info.data_size
    while remaining > 0:
        chunk = src.read(min(COPY_CHUNK, remaining))
        if not chunk:
            # The spool file shrank after parse_wav measured it.
            raise InvalidAudio(
                f"WAV data ended early: {info.data_size - remaining} of {info.data_size} bytes read"
            )
        remaining -= len(chunk)
        yield chunk
    if info.data_size & 1:
        yield b"\x00"


def _chunk_header(f: BinaryIO, pos: int) -> tuple[bytes, int]:
    f.seek(pos)
    raw = f.read(8)
    if len(raw) < 8:
        raise InvalidAudio("WAV file ended inside a chunk header")
    chunk_id, size = struct.unpack("<4sI", raw)
    return chunk_id, size


def _looks_like_chunk(f: BinaryIO, pos: int, file_size: int) -> bool:
    """Whether a plausible chunk header (printable id, size that fits) starts at ``pos``."""
    if pos + 8 > file_size:
        return False
    f.seek(pos)
    raw = f.read(8)
    if len(raw) < 8:
        return False
    chunk_id, size = struct.unpack("<4sI", raw)
    return all(0x20 <= b <= 0x7E for b in chunk_id) and pos + 8 + size <= file_size


def _next_chunk(f: BinaryIO, body: int, size: int, file_size: int) -> int:
    """Where the chunk after the one whose body starts at ``body`` begins.

    An odd chunk is followed by a pad byte, but some writers leave it out; when the padded position
    holds no plausible chunk and the unpadded one does, trust the unpadded one.
    """
    end = body + size
    if (
        size & 1
        and not _looks_like_chunk(f, end + 1, file_size)
        and _looks_like_chunk(f, end, file_size)
    ):
        return end
    return end + (size & 1)


def _parse_fmt(f: BinaryIO, body: int, size: int, file_size: int) -> PcmFormat:
    if size > MAX_FMT_SIZE:
        raise InvalidAudio(f"fmt chunk too large: {size} bytes (at most {MAX_FMT_SIZE})")
    if size < 16:
        raise InvalidAudio(f"fmt chunk too short: {size} bytes (at least 16)")
    if body + size > file_size:
        raise InvalidAudio("WAV file ended inside its fmt chunk")
    f.seek(body)
    raw = f.read(size)
    if len(raw) < size:
        raise InvalidAudio("WAV file ended inside its fmt chunk")
    tag, channels, rate, _byte_rate, _block_align, bits = struct.unpack_from("<HHIIHH", raw)

    if tag == WAVE_FORMAT_EXTENSIBLE:
        # cbSize(2) validBits(2) channelMask(4) subFormat(16) follow the 16 basic bytes.
        if size < 40:
            raise InvalidAudio("WAVE_FORMAT_EXTENSIBLE fmt chunk too short: no subformat")
        subformat = raw[24:40]
        if subformat[2:] != _SUBFORMAT_TAIL:
            raise InvalidAudio(f"unsupported WAV encoding: unknown subformat; {_UPLOAD_HINT}")
        (tag,) = struct.unpack_from("<H", subformat)
    if tag != WAVE_FORMAT_PCM:
        name = _TAG_NAMES.get(tag)
        described = f"format tag {tag}" + (f" ({name})" if name else "")
        raise InvalidAudio(f"unsupported WAV encoding: {described}; {_UPLOAD_HINT}")
    if bits not in SUPPORTED_BITS:
        raise InvalidAudio(f"unsupported sample size: {bits}-bit PCM; {_UPLOAD_HINT}")
    if channels not in SUPPORTED_CHANNELS:
        raise InvalidAudio(f"unsupported channel count {channels}; upload mono or stereo")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidAudio(
            f"sample rate {rate} Hz out of range {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE}"
        )
    # The declared block align and byte rate are redundant for PCM and often wrong; derive them.
    return PcmFormat(sample_rate=rate, channels=channels, bits_per_sample=bits)
