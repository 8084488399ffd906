"""RIFF/WAVE parsing, validation and the canonical WAV (tapevault.core.wav)."""

from __future__ import annotations

import io
import struct
import wave

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tapevault.core.wav import (
    CANONICAL_HEADER_SIZE,
    COPY_CHUNK,
    MAX_CHUNKS,
    PcmFormat,
    WavInfo,
    canonical_header,
    canonical_size,
    parse_wav,
    write_canonical,
)
from tapevault.errors import InvalidAudio, InvalidRequest

PCM_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


# --- building WAV files by hand --------------------------------------------------------------


def chunk(cid: bytes, body: bytes, size: int | None = None, pad: bool = True) -> bytes:
    """One RIFF chunk; ``size`` overrides the declared size, ``pad`` adds the odd pad byte."""
    declared = len(body) if size is None else size
    return struct.pack("<4sI", cid, declared) + body + (b"\x00" if pad and len(body) & 1 else b"")


def fmt_body(
    tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16, extra: bytes = b""
) -> bytes:
    """A fmt chunk body with consistent byte rate and block align."""
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits) + extra


def ext_fmt_body(
    subtag: int = 1, channels: int = 2, rate: int = 48000, bits: int = 24, valid: int = 24
) -> bytes:
    """A WAVE_FORMAT_EXTENSIBLE fmt body whose subformat GUID carries ``subtag``."""
    guid = struct.pack("<H", subtag) + PCM_GUID_TAIL
    extra = struct.pack("<HHI", 22, valid, 0x3 if channels == 2 else 0x4) + guid
    return fmt_body(0xFFFE, channels, rate, bits, extra)


def riff(*chunks: bytes, riff_size: int | None = None) -> bytes:
    """A RIFF/WAVE file of the given chunks; ``riff_size`` overrides the RIFF size."""
    body = b"WAVE" + b"".join(chunks)
    return struct.pack("<4sI", b"RIFF", len(body) if riff_size is None else riff_size) + body


def simple_wav(
    data: bytes, tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16
) -> bytes:
    """fmt then data, nothing else."""
    return riff(chunk(b"fmt ", fmt_body(tag, channels, rate, bits)), chunk(b"data", data))


def parse(raw: bytes) -> WavInfo:
    """parse_wav over an in-memory body."""
    return parse_wav(io.BytesIO(raw), len(raw))


def rejection(raw: bytes) -> str:
    """The message parse_wav rejects ``raw`` with."""
    with pytest.raises(InvalidAudio) as caught:
        parse(raw)
    return caught.value.message


def audio_of(raw: bytes, info: WavInfo) -> bytes:
    """The audio bytes ``info`` points at."""
    return raw[info.data_offset : info.data_offset + info.data_size]


def frames_bytes(count: int, block_align: int) -> bytes:
    """Recognisable, non-silent audio bytes."""
    return bytes((i * 7 + 3) % 256 for i in range(count * block_align))


# --- accepted variants -----------------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 16, 24])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_accepts_plain_pcm(bits: int, channels: int, rate: int) -> None:
    """Every accepted PCM shape parses to its format, data offset and whole-frame size."""
    block = channels * bits // 8
    data = frames_bytes(100, block)
    raw = simple_wav(data, channels=channels, rate=rate, bits=bits)
    info = parse(raw)
    assert info.fmt == PcmFormat(sample_rate=rate, channels=channels, bits_per_sample=bits)
    assert info.data_offset == CANONICAL_HEADER_SIZE
    assert info.data_size == len(data)
    assert info.frames == 100
    assert audio_of(raw, info) == data


def test_format_properties() -> None:
    """block_align and byte_rate follow from the format; duration rounds to the millisecond."""
    fmt = PcmFormat(sample_rate=44100, channels=2, bits_per_sample=24)
    assert fmt.block_align == 6
    assert fmt.byte_rate == 264600
    info = WavInfo(fmt=fmt, data_offset=44, data_size=6 * 44101)
    assert info.frames == 44101
    assert info.duration_ms == 1000  # 1000.02 ms
    assert WavInfo(fmt=fmt, data_offset=44, data_size=6 * 66).duration_ms == 1  # 1.497 ms


@pytest.mark.parametrize("valid_bits", [24, 20])
def test_accepts_extensible_pcm(valid_bits: int) -> None:
    """WAVE_FORMAT_EXTENSIBLE with the PCM subformat is PCM in its container size."""
    data = frames_bytes(10, 6)
    raw = riff(chunk(b"fmt ", ext_fmt_body(valid=valid_bits)), chunk(b"data", data))
    info = parse(raw)
    assert info.fmt == PcmFormat(sample_rate=48000, channels=2, bits_per_sample=24)
    assert audio_of(raw, info) == data


def test_accepts_list_and_fact_before_data() -> None:
    """LIST and fact chunks between fmt and data are skipped."""
    data = frames_bytes(50, 2)
    raw = riff(
        chunk(b"fmt ", fmt_body()),
        chunk(b"fact", struct.pack("<I", 50)),
        chunk(b"LIST", b"INFOISFT\x0e\x00\x00\x00Lavf58.76.100\x00"),
        chunk(b"data", data),
    )
    info = parse(raw)
    assert audio_of(raw, info) == data


def test_accepts_chunks_after_data() -> None:
    """Chunks after the data chunk (id3, LIST) are not audio."""
    data = frames_bytes(50, 2)
    raw = riff(
        chunk(b"fmt ", fmt_body()), chunk(b"data", data), chunk(b"id3 ", b"ID3\x03" + bytes(20))
    )
    info = parse(raw)
    assert info.data_size == len(data)
    assert audio_of(raw, info) == data


def test_accepts_fmt_after_data() -> None:
    """A fmt chunk after a data chunk of known size is still found."""
    data = frames_bytes(50, 2)
    raw = riff(chunk(b"data", data), chunk(b"fmt ", fmt_body()))
    info = parse(raw)
    assert info.data_offset == 20
    assert audio_of(raw, info) == data


def test_accepts_odd_chunk_with_pad_byte() -> None:
    """An odd-sized chunk is followed by a pad byte that is not part of the next chunk."""
    data = frames_bytes(50, 2)
    raw = riff(chunk(b"fmt ", fmt_body()), chunk(b"junk", b"abc"), chunk(b"data", data))
    assert raw[36 + 8 + 3] == 0  # the pad byte
    info = parse(raw)
    assert info.data_offset == 36 + 8 + 4 + 8
    assert audio_of(raw, info) == data


def test_accepts_odd_chunk_missing_its_pad_byte() -> None:
    """A writer that forgot the pad byte after an odd chunk is tolerated."""
    data = frames_bytes(50, 2)
    raw = riff(chunk(b"fmt ", fmt_body()), chunk(b"junk", b"abc", pad=False), chunk(b"data", data))
    info = parse(raw)
    assert audio_of(raw, info) == data


def test_accepts_odd_data_with_pad_byte() -> None:
    """8-bit mono audio of odd length keeps its length; the pad byte is not audio."""
    data = frames_bytes(101, 1)
    raw = simple_wav(data, bits=8) + chunk(b"LIST", b"INFO")
    info = parse(raw)
    assert info.data_size == 101
    assert audio_of(raw, info) == data


@pytest.mark.parametrize("riff_size", [0, 4, 0xFFFFFFFF, 123456789])
def test_ignores_wrong_riff_size(riff_size: int) -> None:
    """The RIFF size is not trusted; the file size is."""
    data = frames_bytes(50, 2)
    raw = riff(chunk(b"fmt ", fmt_body()), chunk(b"data", data), riff_size=riff_size)
    assert audio_of(raw, parse(raw)) == data


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF])
def test_streaming_placeholder_uses_bytes_present(placeholder: int) -> None:
    """A data size of 0 or 0xFFFFFFFF means the audio runs to the end of the file."""
    data = frames_bytes(77, 4)
    raw = riff(
        chunk(b"fmt ", fmt_body(channels=2)),
        chunk(b"data", data, size=placeholder),
        riff_size=placeholder,
    )
    info = parse(raw)
    assert info.data_size == len(data)
    assert audio_of(raw, info) == data


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF])
def test_streaming_placeholder_cuts_partial_frame(placeholder: int) -> None:
    """A streamed file cut mid-frame loses only the partial frame."""
    data = frames_bytes(77, 4)
    raw = riff(
        chunk(b"fmt ", fmt_body(channels=2)),
        chunk(b"data", data + b"\x01\x02\x03", size=placeholder, pad=False),
    )
    info = parse(raw)
    assert info.data_size == len(data)
    assert audio_of(raw, info) == data


def test_cuts_partial_trailing_frame() -> None:
    """A declared data size that is not a whole number of frames is rounded down."""
    data = frames_bytes(20, 6)
    raw = simple_wav(data + b"\x09\x08\x07\x06\x05", channels=2, bits=24)
    info = parse(raw)
    assert info.data_size == len(data)
    assert info.frames == 20


def test_data_shorter_than_file_uses_declared_size() -> None:
    """Bytes after the declared data (trailing garbage) are not audio."""
    data = frames_bytes(30, 2)
    raw = simple_wav(data) + b"\xff\xfe garbage that is no chunk"
    info = parse(raw)
    assert info.data_size == len(data)


def test_parse_reads_only_headers() -> None:
    """parse_wav seeks past the data chunk instead of reading it."""

    class CountingReader(io.BytesIO):
        largest = 0

        def read(self, size: int | None = -1, /) -> bytes:
            got = super().read(size)
            CountingReader.largest = max(CountingReader.largest, len(got))
            return got

    data = bytes(3 * COPY_CHUNK)
    raw = riff(chunk(b"fmt ", fmt_body()), chunk(b"data", data), chunk(b"LIST", b"INFO"))
    info = parse_wav(CountingReader(raw), len(raw))
    assert info.data_size == len(data)
    assert CountingReader.largest <= 64


# --- rejections ------------------------------------------------------------------------------


def test_invalid_audio_is_an_invalid_request() -> None:
    """InvalidAudio sits under InvalidRequest, so it maps to a client error."""
    assert issubclass(InvalidAudio, InvalidRequest)


@pytest.mark.parametrize(
    ("tag", "described"),
    [
        (3, "format tag 3 (IEEE float)"),
        (7, "format tag 7 (μ-law)"),
        (6, "format tag 6 (A-law)"),
        (2, "format tag 2 (Microsoft ADPCM)"),
        (0x1234, "format tag 4660"),
    ],
)
def test_rejects_non_pcm_encodings(tag: int, described: str) -> None:
    """Compressed and float encodings are named, with what to upload instead."""
    raw = simple_wav(bytes(400), tag=tag, bits=32 if tag == 3 else 8)
    assert rejection(raw) == f"unsupported WAV encoding: {described}; upload 8/16/24-bit PCM"


def test_rejects_extensible_float() -> None:
    """An extensible header with the IEEE float subformat is float, not PCM."""
    raw = riff(chunk(b"fmt ", ext_fmt_body(subtag=3, bits=32, valid=32)), chunk(b"data", bytes(80)))
    assert rejection(raw) == (
        "unsupported WAV encoding: format tag 3 (IEEE float); upload 8/16/24-bit PCM"
    )


def test_rejects_extensible_unknown_subformat() -> None:
    """An extensible header whose GUID is not a known KSDATAFORMAT subtype is rejected."""
    body = fmt_body(0xFFFE, 2, 48000, 24, struct.pack("<HHI", 22, 24, 3) + bytes(range(16)))
    assert rejection(riff(chunk(b"fmt ", body), chunk(b"data", bytes(60)))) == (
        "unsupported WAV encoding: unknown subformat; upload 8/16/24-bit PCM"
    )


def test_rejects_extensible_without_subformat() -> None:
    """An extensible fmt chunk too short to hold its subformat is rejected."""
    raw = riff(chunk(b"fmt ", fmt_body(0xFFFE, extra=b"\x00\x00")), chunk(b"data", bytes(60)))
    assert "too short" in rejection(raw)


@pytest.mark.parametrize("bits", [32, 4, 12, 0])
def test_rejects_unsupported_sample_sizes(bits: int) -> None:
    """Only 8, 16 and 24-bit PCM is taken."""
    raw = simple_wav(bytes(400), bits=bits)
    assert rejection(raw) == f"unsupported sample size: {bits}-bit PCM; upload 8/16/24-bit PCM"


@pytest.mark.parametrize("rate", [96000, 48001, 7999, 0])
def test_rejects_sample_rates_out_of_range(rate: int) -> None:
    """Sample rates outside 8000-48000 Hz are rejected with the range."""
    assert rejection(simple_wav(bytes(400), rate=rate)) == (
        f"sample rate {rate} Hz out of range 8000-48000"
    )


@pytest.mark.parametrize("channels", [3, 6, 0])
def test_rejects_channel_counts(channels: int) -> None:
    """Only mono and stereo are taken."""
    assert rejection(simple_wav(bytes(600), channels=channels)) == (
        f"unsupported channel count {channels}; upload mono or stereo"
    )


def test_rejects_truncated_data() -> None:
    """A data chunk that declares more bytes than the file holds is truncated."""
    raw = riff(chunk(b"fmt ", fmt_body()), chunk(b"data", bytes(500), size=1000))
    assert rejection(raw) == "WAV data chunk truncated: header declares 1000 bytes, 500 present"


@pytest.mark.parametrize("over", [1, 36, 64])
def test_a_claim_a_few_bytes_over_the_body_is_taken_as_present(over: int) -> None:
    """A missing pad byte or a header counted into the data size is not truncation: the audio
    present is used; one byte past the tolerance is refused."""
    raw = riff(chunk(b"fmt ", fmt_body()), chunk(b"data", bytes(500), size=500 + over))
    assert parse(raw).data_size == 500
    beyond = riff(chunk(b"fmt ", fmt_body()), chunk(b"data", bytes(500), size=500 + 65))
    assert rejection(beyond) == "WAV data chunk truncated: header declares 565 bytes, 500 present"


def test_rejects_empty_body() -> None:
    """An empty upload says so."""
    assert rejection(b"") == "empty body: upload a WAV file"


@pytest.mark.parametrize(
    "raw",
    [
        simple_wav(b""),
        simple_wav(b"\x01"),  # half a 16-bit frame
        simple_wav(bytes(5), channels=2, bits=24),
        riff(chunk(b"fmt ", fmt_body()), chunk(b"data", b"", size=0xFFFFFFFF)),
        riff(chunk(b"fmt ", fmt_body()), chunk(b"data", b""), chunk(b"LIST", b"INFOabcd")),
    ],
    ids=[
        "zero-size",
        "half-frame",
        "partial-24-bit-frame",
        "placeholder-at-eof",
        "empty-then-list",
    ],
)
def test_rejects_zero_samples(raw: bytes) -> None:
    """A data chunk without a single whole frame has no audio samples."""
    assert rejection(raw) == "WAV file has no audio samples"


@pytest.mark.parametrize(
    "raw",
    [
        b"R",
        b"RIFF",
        b"RIFF\x24\x00\x00\x00",
        b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(100),
        b"OggS" + bytes(100),
        b"RIFF\x24\x00\x00\x00AVI LIST",
        b"not audio at all, just a text file\n",
    ],
)
def test_rejects_non_riff(raw: bytes) -> None:
    """Anything without a RIFF/WAVE header is not a WAV file."""
    assert rejection(raw) == "not a WAV file: missing RIFF/WAVE header"


def test_rejects_rf64_by_name() -> None:
    """RF64 (64-bit WAV) is named, so the client knows what to change."""
    raw = b"RF64\xff\xff\xff\xffWAVEds64" + bytes(100)
    assert rejection(raw).startswith("RF64 WAV is not supported")


def test_rejects_missing_fmt() -> None:
    """A data chunk with no fmt chunk cannot be interpreted."""
    raw = riff(chunk(b"LIST", b"INFO"), chunk(b"data", bytes(100)))
    assert rejection(raw).startswith("missing fmt chunk")


def test_rejects_missing_data() -> None:
    """A fmt chunk and no data chunk holds no audio."""
    raw = riff(chunk(b"fmt ", fmt_body()), chunk(b"LIST", b"INFO"))
    assert rejection(raw).startswith("missing data chunk")


def test_rejects_data_hidden_behind_lying_chunk() -> None:
    """A chunk whose size runs past the end of the file ends the walk."""
    raw = riff(
        chunk(b"fmt ", fmt_body()), chunk(b"LIST", b"INFO", size=1 << 30), chunk(b"data", bytes(8))
    )
    assert rejection(raw).startswith("missing data chunk")


@pytest.mark.parametrize("size", [1025, 4096, 0xFFFFFFF0])
def test_rejects_oversized_fmt(size: int) -> None:
    """A fmt chunk over 1 KiB is refused before anything is read from it."""
    raw = riff(chunk(b"fmt ", fmt_body() + bytes(max(0, min(size, 4096) - 16)), size=size))
    raw += chunk(b"data", bytes(100))
    assert rejection(raw) == f"fmt chunk too large: {size} bytes (at most 1024)"


def test_rejects_short_fmt() -> None:
    """A fmt chunk shorter than the 16 PCM bytes is refused."""
    raw = riff(chunk(b"fmt ", fmt_body()[:14]), chunk(b"data", bytes(100)))
    assert rejection(raw) == "fmt chunk too short: 14 bytes (at least 16)"


def test_rejects_fmt_cut_by_end_of_file() -> None:
    """A fmt chunk that the file ends inside is refused."""
    raw = riff(chunk(b"fmt ", fmt_body()))[:-4]
    assert "ended inside its fmt chunk" in rejection(raw)


@pytest.mark.parametrize("cid", [b"fmt ", b"data"])
def test_rejects_duplicate_chunks(cid: bytes) -> None:
    """Two fmt or two data chunks make the file ambiguous."""
    fmt = chunk(b"fmt ", fmt_body())
    if cid == b"fmt ":
        raw = riff(fmt, fmt, chunk(b"data", bytes(10)))
    else:
        raw = riff(chunk(b"data", bytes(10)), chunk(b"data", bytes(10)), fmt)
    assert rejection(raw) == f"WAV file has more than one {cid.decode().strip()} chunk"


def test_rejects_too_many_chunks() -> None:
    """The chunk walk is bounded: thousands of tiny chunks before the audio are refused."""
    raw = riff(
        chunk(b"fmt ", fmt_body()), *[chunk(b"junk", b"")] * MAX_CHUNKS, chunk(b"data", bytes(10))
    )
    assert rejection(raw) == f"WAV file has more than {MAX_CHUNKS} chunks before its audio"


def test_accepts_many_chunks_within_bound() -> None:
    """A few hundred small chunks before the audio are fine."""
    raw = riff(chunk(b"fmt ", fmt_body()), *[chunk(b"junk", b"x")] * 500, chunk(b"data", bytes(10)))
    assert parse(raw).data_size == 10


# --- the canonical file ----------------------------------------------------------------------


def canonical(raw: bytes) -> bytes:
    """The canonical WAV of ``raw``, assembled from write_canonical's pieces."""
    info = parse(raw)
    return b"".join(write_canonical(io.BytesIO(raw), info))


def test_canonical_header_layout() -> None:
    """The header is the classic 44-byte PCM header, field by field."""
    fmt = PcmFormat(sample_rate=16000, channels=2, bits_per_sample=16)
    header = canonical_header(fmt, 6400)
    assert len(header) == 44
    assert struct.unpack("<4sI4s4sIHHIIHH4sI", header) == (
        b"RIFF",
        36 + 6400,
        b"WAVE",
        b"fmt ",
        16,
        1,
        2,
        16000,
        64000,
        4,
        16,
        b"data",
        6400,
    )


def test_canonical_header_counts_pad_byte() -> None:
    """An odd data size makes the RIFF size count the pad byte that follows the data."""
    fmt = PcmFormat(sample_rate=8000, channels=1, bits_per_sample=8)
    (riff_size,) = struct.unpack_from("<I", canonical_header(fmt, 101), 4)
    assert riff_size == 36 + 101 + 1
    assert canonical_size(101) == 44 + 101 + 1
    assert canonical_size(100) == 144


@pytest.mark.parametrize("size", [-1, 0xFFFFFFFF])
def test_canonical_header_refuses_impossible_sizes(size: int) -> None:
    """Sizes a RIFF header cannot hold are a programming error."""
    with pytest.raises(ValueError):
        canonical_header(PcmFormat(16000, 1, 16), size)


@pytest.mark.parametrize(
    "raw",
    [
        riff(
            chunk(b"fmt ", ext_fmt_body()),
            chunk(b"LIST", b"INFOabc"),
            chunk(b"data", frames_bytes(40, 6) + b"\x01\x02"),
            chunk(b"id3 ", bytes(9)),
            riff_size=0,
        ),
        riff(chunk(b"fmt ", fmt_body(bits=8)), chunk(b"data", frames_bytes(33, 1), size=0)),
        riff(chunk(b"fmt ", fmt_body(channels=2, rate=8000)), chunk(b"data", frames_bytes(9, 4))),
    ],
    ids=["extensible-with-extras", "8-bit-streamed-odd", "plain-stereo"],
)
def test_canonical_round_trip(raw: bytes) -> None:
    """parse_wav of the canonical output gives the same format and the same audio bytes."""
    info = parse(raw)
    out = canonical(raw)
    assert len(out) == canonical_size(info.data_size)
    again = parse(out)
    assert again.fmt == info.fmt
    assert again.data_offset == CANONICAL_HEADER_SIZE
    assert audio_of(out, again) == audio_of(raw, info)
    assert canonical(out) == out  # canonical is a fixed point


def test_write_canonical_streams_in_mebibyte_pieces() -> None:
    """The header comes alone, then the audio in pieces of at most 1 MiB."""
    data = frames_bytes(1_300_000, 2)  # 2.6 MB
    raw = riff(chunk(b"fmt ", fmt_body()), chunk(b"LIST", b"INFO"), chunk(b"data", data))
    pieces = list(write_canonical(io.BytesIO(raw), parse(raw)))
    assert len(pieces[0]) == 44
    assert [len(p) for p in pieces[1:]] == [COPY_CHUNK, COPY_CHUNK, len(data) - 2 * COPY_CHUNK]
    assert b"".join(pieces[1:]) == data


def test_write_canonical_notices_shrunken_source() -> None:
    """If the spooled file lost bytes since parsing, the copy fails instead of padding."""
    raw = simple_wav(frames_bytes(100, 2))
    info = parse(raw)
    with pytest.raises(InvalidAudio, match="ended early"):
        b"".join(write_canonical(io.BytesIO(raw[:100]), info))


@pytest.mark.parametrize("bits", [8, 16, 24])
@pytest.mark.parametrize("channels", [1, 2])
def test_stdlib_wave_reads_canonical_output(bits: int, channels: int) -> None:
    """The stdlib wave module reads the same format and frames from the canonical file."""
    block = channels * bits // 8
    data = frames_bytes(101, block)
    raw = riff(
        chunk(b"fmt ", fmt_body(channels=channels, rate=22050, bits=bits)),
        chunk(b"LIST", b"INFOx"),
        chunk(b"data", data + b"\x07" * (block - 1), size=0xFFFFFFFF, pad=False),
    )
    out = canonical(raw)
    with wave.open(io.BytesIO(out)) as reader:
        assert reader.getnchannels() == channels
        assert reader.getsampwidth() == bits // 8
        assert reader.getframerate() == 22050
        assert reader.getnframes() == 101
        assert reader.readframes(1000) == data


@pytest.mark.parametrize("width", [1, 2, 3])
def test_parse_agrees_with_stdlib_wave_writer(width: int) -> None:
    """Files written by the stdlib wave module parse to the frames wave wrote."""
    data = frames_bytes(333, 2 * width)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(width)
        writer.setframerate(11025)
        writer.writeframes(data)
    raw = buf.getvalue()
    info = parse(raw)
    assert info.fmt == PcmFormat(11025, 2, 8 * width)
    assert info.frames == 333
    assert audio_of(raw, info) == data


# --- properties ------------------------------------------------------------------------------


def check_consistent(raw: bytes) -> None:
    """parse_wav either raises InvalidAudio or returns a WavInfo that fits inside ``raw``."""
    try:
        info = parse(raw)
    except InvalidAudio as exc:
        assert exc.message
        return
    assert info.fmt.channels in (1, 2)
    assert info.fmt.bits_per_sample in (8, 16, 24)
    assert 8000 <= info.fmt.sample_rate <= 48000
    assert info.data_offset > 12
    assert info.data_size > 0
    assert info.data_size % info.fmt.block_align == 0
    assert info.data_offset + info.data_size <= len(raw)
    assert info.frames * info.fmt.block_align == info.data_size


chunk_ids = st.sampled_from([b"fmt ", b"data", b"LIST", b"fact", b"junk"]) | st.binary(
    min_size=4, max_size=4
)


@st.composite
def chunky_files(draw: st.DrawFn) -> bytes:
    """RIFF/WAVE files built from plausible and implausible chunks with lying sizes."""
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        cid = draw(chunk_ids)
        if cid == b"fmt " and draw(st.booleans()):
            body = draw(
                st.builds(
                    fmt_body,
                    tag=st.sampled_from([1, 3, 7, 0xFFFE, 1]),
                    channels=st.integers(0, 3),
                    rate=st.sampled_from([0, 8000, 16000, 48000, 96000]),
                    bits=st.sampled_from([0, 8, 16, 24, 32]),
                    extra=st.binary(max_size=30),
                )
            )
        else:
            body = draw(st.binary(max_size=64))
        size = draw(
            st.none()
            | st.sampled_from([0, 1, 15, 16, 1025, 0xFFFFFFFF])
            | st.integers(0, 2**32 - 1)
        )
        parts.append(chunk(cid, body, size=size, pad=draw(st.booleans())))
    raw = riff(*parts, riff_size=draw(st.none() | st.integers(0, 2**32 - 1)))
    cut = draw(st.integers(0, 8))
    return raw[: len(raw) - cut] if cut else raw


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    """Arbitrary bytes give a consistent WavInfo or InvalidAudio, nothing else."""
    check_consistent(raw)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_bytes_after_riff_header(tail: bytes) -> None:
    """Arbitrary chunk soup after a valid RIFF/WAVE header never crashes the parser."""
    check_consistent(b"RIFF\x00\x00\x00\x00WAVE" + tail)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(chunky_files())
def test_fuzz_structured_chunks(raw: bytes) -> None:
    """Chunk sequences with lying sizes and odd pads never crash the parser."""
    check_consistent(raw)


@settings(max_examples=300)
@given(st.data())
def test_fuzz_mutated_valid_file(data: st.DataObject) -> None:
    """A valid file with bytes overwritten anywhere parses consistently or is rejected."""
    raw = bytearray(
        riff(chunk(b"fmt ", ext_fmt_body()), chunk(b"LIST", b"INFOab"), chunk(b"data", bytes(60)))
    )
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    check_consistent(bytes(raw))


@given(
    st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
    st.sampled_from([1, 2]),
    st.sampled_from([8, 16, 24]),
    st.binary(min_size=1, max_size=200),
)
def test_round_trip_property(rate: int, channels: int, bits: int, audio: bytes) -> None:
    """Any whole-frame audio survives canonical_header + parse_wav unchanged."""
    fmt = PcmFormat(rate, channels, bits)
    audio = audio[: len(audio) - len(audio) % fmt.block_align]
    raw = canonical_header(fmt, len(audio)) + audio + b"\x00" * (len(audio) & 1)
    if not audio:
        assert rejection(raw) == "WAV file has no audio samples"
        return
    info = parse(raw)
    assert info == WavInfo(fmt=fmt, data_offset=44, data_size=len(audio))
    assert audio_of(raw, info) == audio
