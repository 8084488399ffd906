"""Decoding uploads of every accepted format into canonical WAV (tapevault.ingest.decode).

Fixtures are made with ffmpeg from one source: a 2.0 s 440 Hz sine at the source rate. Decoded
lengths are compared with the source within each codec's known padding, in source-rate samples:

* PCM, FLAC: exact.
* MP3: ffmpeg writes a LAME tag that states delay and padding, so FFmpeg trims exactly; without
  it up to 1152 + 529 samples (one frame plus the decoder delay) remain.
* AAC: the MP4 edit list trims the 1024-sample priming but not the end padding (up to one
  1024-sample frame); raw ADTS trims nothing: up to 2048.
* Opus: decodes at 48 kHz; the 312-sample pre-skip is trimmed, WebM keeps the padding of the last
  20 ms frame: up to 960 samples at 48 kHz.
* Vorbis: the Ogg granule positions trim exactly; allow a 64-sample slack.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import os
import shutil
import struct
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tapevault.core.wav import CANONICAL_HEADER_SIZE, parse_wav
from tapevault.errors import InvalidAudio, InvalidRequest, TapevaultError, UnsupportedMediaType
from tapevault.ingest.decode import (
    ACCEPTED_CONTENT_TYPES,
    DecodedAudio,
    check_content_type,
    decode_to_wav,
    sniff,
)
from tests.conftest import need

SECONDS = 2.0
TONE_HZ = 440
RATES = (8000, 16000, 44100, 48000)

# name: (ffmpeg output arguments, file suffix, source_format, bits stored, slack in samples)
FORMATS: dict[str, tuple[list[str], str, str, int, int]] = {
    "wav_u8": (["-c:a", "pcm_u8"], "wav", "wav/pcm_u8", 8, 0),
    "wav_s16": (["-c:a", "pcm_s16le"], "wav", "wav/pcm_s16le", 16, 0),
    "wav_s24": (["-c:a", "pcm_s24le"], "wav", "wav/pcm_s24le", 24, 0),
    "wav_s32": (["-c:a", "pcm_s32le"], "wav", "wav/pcm_s32le", 24, 0),
    "wav_f32": (["-c:a", "pcm_f32le"], "wav", "wav/pcm_f32le", 24, 0),
    "wav_mulaw": (["-c:a", "pcm_mulaw"], "wav", "wav/pcm_mulaw", 16, 0),
    "wav_alaw": (["-c:a", "pcm_alaw"], "wav", "wav/pcm_alaw", 16, 0),
    "mp3": (["-c:a", "libmp3lame", "-b:a", "64k"], "mp3", "mp3", 16, 1152 + 529),
    "flac": (["-c:a", "flac"], "flac", "flac", 16, 0),
    "ogg_vorbis": (["-c:a", "libvorbis"], "ogg", "ogg/vorbis", 16, 64),
    "ogg_opus": (["-c:a", "libopus"], "opus", "ogg/opus", 16, 960),
    "webm_opus": (["-c:a", "libopus"], "webm", "webm/opus", 16, 960),
    "m4a_aac": (["-c:a", "aac"], "m4a", "mp4/aac", 16, 1024),
    "adts_aac": (["-c:a", "aac", "-f", "adts"], "aac", "aac", 16, 2048),
}


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly, failing the test with its message when it fails."""
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def make(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """A maker of fixture files (cached): ``make(name, rate, source=..., extra=[...])``."""
    need(shutil.which("ffmpeg") is not None, "ffmpeg is not installed")
    root = tmp_path_factory.mktemp("decode")
    made: dict[tuple[object, ...], Path] = {}

    def build(
        name: str, rate: int = 16000, *, source: str | None = None, extra: tuple[str, ...] = ()
    ) -> Path:
        key = (name, rate, source, extra)
        if key not in made:
            args, suffix, *_ = FORMATS[name]
            lavfi = source or f"sine=frequency={TONE_HZ}:sample_rate={rate}:duration={SECONDS}"
            path = root / f"{name}-{rate}-{len(made)}.{suffix}"
            ffmpeg("-f", "lavfi", "-i", lavfi, *extra, *args, str(path))
            made[key] = path
        return made[key]

    return build


def decode(src: Path, **kwargs: object) -> tuple[DecodedAudio, Path]:
    """Decode ``src`` next to itself; the result and the WAV written."""
    dst = src.with_name(src.name + ".out.wav")
    return decode_to_wav(src, dst, **kwargs), dst  # type: ignore[arg-type]


def channel0(path: Path) -> list[int]:
    """The first channel's samples of a WAV, as signed integers (via the stdlib wave module)."""
    with wave.open(str(path), "rb") as w:
        width, channels, raw = w.getsampwidth(), w.getnchannels(), w.readframes(w.getnframes())
    if width == 1:
        return [b - 128 for b in raw[::channels]]
    if width == 2:
        return list(array.array("h", raw))[::channels]
    step = width * channels
    return [
        int.from_bytes(raw[i : i + width], "little", signed=True) for i in range(0, len(raw), step)
    ]


def tone_hz(samples: list[int], rate: int) -> float:
    """The frequency of a pure tone, from its rising crossings (with hysteresis against noise)."""
    threshold = max(map(abs, samples)) // 4
    rises, low = [], False
    for i, sample in enumerate(samples):
        if sample < -threshold:
            low = True
        elif low and sample >= 0:
            rises.append(i)
            low = False
    return (len(rises) - 1) * rate / (rises[-1] - rises[0])


def check_canonical(result: DecodedAudio, dst: Path) -> None:
    """``dst`` is the canonical WAV ``result`` describes, readable by parse_wav and wave."""
    blob = dst.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == result.sha256
    assert len(blob) == CANONICAL_HEADER_SIZE + result.data_size + (result.data_size & 1)
    with dst.open("rb") as f:
        info = parse_wav(f, len(blob))
    assert info.data_offset == CANONICAL_HEADER_SIZE
    assert info.data_size == result.data_size
    assert (info.fmt.sample_rate, info.fmt.channels) == (result.sample_rate, result.channels)
    assert info.fmt.bits_per_sample == result.bits_per_sample
    assert info.frames == result.frames
    with wave.open(str(dst), "rb") as w:
        assert w.getframerate() == result.sample_rate
        assert w.getnframes() == result.frames


# --- every format at every rate --------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name", list(FORMATS))
def test_decodes_format_at_rate(make: Callable[..., Path], name: str, rate: int) -> None:
    """Each format decodes at the source rate (48 kHz for Opus), to the source length and tone."""
    _, _, source_format, bits, slack = FORMATS[name]
    result, dst = decode(make(name, rate))
    check_canonical(result, dst)
    stored_rate = 48000 if "opus" in name else rate
    assert result.sample_rate == stored_rate
    assert result.source_format == source_format
    assert (result.channels, result.bits_per_sample) == (1, bits)
    assert abs(result.frames - SECONDS * stored_rate) <= slack
    assert abs(tone_hz(channel0(dst), stored_rate) - TONE_HZ) < 2


def test_extensible_fixtures_are_extensible(make: Callable[..., Path]) -> None:
    """ffmpeg writes >16-bit WAV as WAVE_FORMAT_EXTENSIBLE, so those cases cover it."""
    for name in ("wav_s24", "wav_s32", "wav_f32"):
        (tag,) = struct.unpack_from("<H", make(name).read_bytes(), 20)
        assert tag == 0xFFFE


@pytest.mark.parametrize("name", ["wav_u8", "wav_s16", "wav_s24"])
def test_pcm_fast_path_is_bit_exact(make: Callable[..., Path], name: str) -> None:
    """Plain PCM WAV is copied without FFmpeg: the samples are the source's bytes."""
    src = make(name, 44100, extra=("-ac", "2"))
    result, dst = decode(src)
    with src.open("rb") as f:
        info = parse_wav(f, src.stat().st_size)
        f.seek(info.data_offset)
        original = f.read(info.data_size)
    assert dst.read_bytes()[CANONICAL_HEADER_SIZE:][: len(original)] == original
    assert result.channels == 2
    assert result.data_size == len(original)


@pytest.mark.parametrize("name", ["flac", "wav_s32", "wav_f32", "wav_mulaw"])
def test_lossless_and_g711_match_the_16_bit_source(make: Callable[..., Path], name: str) -> None:
    """FLAC is exact; 32-bit and float keep 24 bits; μ-law stays within its quantisation."""
    reference = channel0(decode(make("wav_s16"))[1])
    decoded = channel0(decode(make(name))[1])
    shift = 8 if name in ("wav_s32", "wav_f32") else 0
    error = max(abs((d >> shift) - r) for d, r in zip(decoded, reference, strict=True))
    assert error <= {"flac": 0, "wav_s32": 0, "wav_f32": 1, "wav_mulaw": 256}[name]


def test_more_than_two_channels_are_downmixed(make: Callable[..., Path]) -> None:
    """A 5.1 FLAC and a 4-channel WAV are stored as stereo; max_channels=1 stores mono."""
    six = make("flac", extra=("-ac", "6"))
    result, dst = decode(six)
    assert result.channels == 2
    check_canonical(result, dst)
    four = make("wav_s16", extra=("-ac", "4"))
    assert decode(four)[0].channels == 2
    mono, dst = decode(make("wav_s16", extra=("-ac", "2")), max_channels=1)
    assert (mono.channels, mono.frames) == (1, 32000)
    check_canonical(mono, dst)


def test_max_channels_must_be_storable(make: Callable[..., Path]) -> None:
    """max_channels outside 1-2 is a programming error, not the client's."""
    with pytest.raises(ValueError, match="max_channels"):
        decode(make("wav_s16"), max_channels=6)


def test_silence_is_stored(make: Callable[..., Path]) -> None:
    """All-zero audio is valid audio: stored, at full length, all zeros."""
    silence = "anullsrc=channel_layout=mono:sample_rate=16000"
    for name in ("wav_s16", "flac", "mp3"):
        result, dst = decode(make(name, source=silence, extra=("-t", "2")))
        check_canonical(result, dst)
        assert abs(result.frames - 32000) <= FORMATS[name][4]
        assert not any(channel0(dst))


def test_id3_tag_before_flac_is_skipped(make: Callable[..., Path], tmp_path: Path) -> None:
    """An ID3v2 tag in front of a FLAC stream is skipped by the sniffer and FFmpeg."""
    body = b"\x00" * 5000
    tag = b"ID3\x04\x00\x00" + bytes([0, 0, (len(body) >> 7) & 0x7F, len(body) & 0x7F]) + body
    src = tmp_path / "tagged.flac"
    src.write_bytes(tag + make("flac").read_bytes())
    assert sniff(src.read_bytes()[:64]) == "mp3"  # the head does not reach past the tag
    assert sniff(src.read_bytes()[:6000]) == "flac"
    assert decode(src)[0].source_format == "flac"


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF])
def test_streamed_wav_with_unpatched_sizes_is_stored(
    make: Callable[..., Path], tmp_path: Path, placeholder: int
) -> None:
    """A float WAV whose RIFF/data sizes a streaming writer never patched runs to the file end."""
    blob = bytearray(make("wav_f32").read_bytes() + b"\x01\x02")  # and a partial last frame
    struct.pack_into("<I", blob, 4, placeholder)
    struct.pack_into("<I", blob, blob.index(b"data") + 4, placeholder)
    src = tmp_path / "streamed.wav"
    src.write_bytes(blob)
    result, dst = decode(src)
    check_canonical(result, dst)
    assert result.frames == 32000


def test_rf64_wav_is_decoded(make: Callable[..., Path]) -> None:
    """RF64 (which core.wav refuses) goes through FFmpeg and is stored as canonical WAV."""
    result, dst = decode(make("wav_s16", extra=("-rf64", "always")))
    check_canonical(result, dst)
    assert (result.source_format, result.frames) == ("wav/pcm_s16le", 32000)


def test_24_bit_flac_keeps_24_bits(make: Callable[..., Path]) -> None:
    """A 24-bit stereo FLAC is stored as 24-bit stereo."""
    result, dst = decode(make("flac", 48000, extra=("-ac", "2", "-sample_fmt", "s32")))
    check_canonical(result, dst)
    assert (result.bits_per_sample, result.channels, result.frames) == (24, 2, 96000)


def test_wav_of_unknown_codec_is_invalid_audio(make: Callable[..., Path], tmp_path: Path) -> None:
    """A WAV whose format tag no decoder knows is InvalidAudio, not a crash."""
    blob = bytearray(make("wav_s16").read_bytes())
    struct.pack_into("<H", blob, blob.index(b"fmt ") + 8, 0x1234)
    src = tmp_path / "unknown.wav"
    src.write_bytes(blob)
    with pytest.raises(InvalidAudio, match="not supported"):
        decode(src)


def test_id3_tag_then_padding_is_still_mp3(make: Callable[..., Path], tmp_path: Path) -> None:
    """Zero padding between an ID3v2 tag and the first MP3 frame does not hide the MP3."""
    mp3 = make("mp3", extra=("-id3v2_version", "0"))
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x10" + bytes(16)
    src = tmp_path / "padded.mp3"
    src.write_bytes(tag + bytes(300) + mp3.read_bytes())
    result, dst = decode(src)
    check_canonical(result, dst)
    assert abs(result.frames - 32000) <= FORMATS["mp3"][4]


# --- truncated, corrupt, empty ---------------------------------------------------------------


def cut_in_half(src: Path, tmp_path: Path) -> Path:
    """A copy of ``src`` holding only its first half."""
    blob = src.read_bytes()
    cut = tmp_path / f"cut-{src.name}"
    cut.write_bytes(blob[: len(blob) // 2])
    return cut


@pytest.mark.parametrize(
    "name", ["wav_s16", "wav_f32", "wav_alaw", "mp3", "flac", "ogg_vorbis", "webm_opus", "m4a_aac"]
)
def test_truncated_upload_is_rejected(make: Callable[..., Path], tmp_path: Path, name: str) -> None:
    """A file cut in half is refused when its header, demuxer or decoder can tell it."""
    cut = cut_in_half(make(name), tmp_path)
    dst = tmp_path / "out.wav"
    with pytest.raises(InvalidAudio):
        decode_to_wav(cut, dst)
    assert not dst.exists()


def test_truncated_stream_without_stated_length_is_stored(
    make: Callable[..., Path], tmp_path: Path
) -> None:
    """MediaRecorder-style WebM (no Duration) cut in half is stored as what it holds."""
    live = make("webm_opus", extra=("-live", "1"))
    result, dst = decode(cut_in_half(live, tmp_path))
    check_canonical(result, dst)
    assert 0.5 * 96000 - 4800 < result.frames < 0.5 * 96000 + 4800


@pytest.mark.parametrize("name", ["mp3", "flac", "ogg_vorbis", "ogg_opus", "webm_opus", "m4a_aac"])
def test_random_bytes_after_a_valid_header_are_rejected(
    make: Callable[..., Path], tmp_path: Path, name: str
) -> None:
    """A real header followed by noise is InvalidAudio, never a stored recording."""
    src = tmp_path / f"corrupt-{name}"
    src.write_bytes(make(name).read_bytes()[:200] + os.urandom(20000))
    with pytest.raises(InvalidAudio):
        decode(src)


def test_wav_whose_data_is_shorter_than_declared_is_rejected(
    make: Callable[..., Path], tmp_path: Path
) -> None:
    """Float WAV (FFmpeg path) with its data cut short is InvalidAudio."""
    blob = make("wav_f32").read_bytes()
    src = tmp_path / "short.wav"
    src.write_bytes(blob[:1001])
    with pytest.raises(InvalidAudio, match="truncated"):
        decode(src)


def test_empty_body_is_rejected(tmp_path: Path) -> None:
    """A zero-byte upload is InvalidAudio saying the body is empty."""
    src = tmp_path / "empty"
    src.touch()
    with pytest.raises(InvalidAudio, match="empty body"):
        decode(src)


def test_text_file_is_unsupported_media(tmp_path: Path) -> None:
    """A text file is UnsupportedMediaType, a 4xx InvalidRequest."""
    src = tmp_path / "notes.txt"
    src.write_text("#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n")
    with pytest.raises(UnsupportedMediaType) as caught:
        decode(src)
    assert isinstance(caught.value, InvalidRequest)


def test_video_only_file_is_unsupported_media(make: Callable[..., Path], tmp_path: Path) -> None:
    """An MP4 holding only video is UnsupportedMediaType naming the missing audio."""
    src = tmp_path / "video.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x64", "-c:v", "mpeg4", str(src))
    with pytest.raises(UnsupportedMediaType, match="only video"):
        decode(src)


def test_sample_rate_out_of_range_is_rejected(make: Callable[..., Path]) -> None:
    """96 kHz audio (FLAC, or PCM WAV on the FFmpeg path) is refused, not resampled."""
    for name in ("flac", "wav_s16"):
        with pytest.raises(InvalidAudio, match="96000 Hz"):
            decode(make(name, 96000))


def test_sample_rate_change_mid_stream_is_rejected(
    make: Callable[..., Path], tmp_path: Path
) -> None:
    """Two MP3s of different rates glued together are refused, not stored at the wrong speed."""
    src = tmp_path / "glued.mp3"
    raw = ("-write_xing", "0", "-id3v2_version", "0")
    src.write_bytes(
        make("mp3", 16000, extra=raw).read_bytes() + make("mp3", 44100, extra=raw).read_bytes()
    )
    with pytest.raises(InvalidAudio, match="mid-stream"):
        decode(src)


@pytest.mark.parametrize("name", ["wav_s16", "mp3"])
def test_output_caps_stop_decompression_bombs(
    make: Callable[..., Path], tmp_path: Path, name: str
) -> None:
    """Output past max_output_bytes or max_duration_s is refused and dst removed (both paths)."""
    dst = tmp_path / "out.wav"
    with pytest.raises(InvalidAudio, match="exceeds 10000 bytes"):
        decode_to_wav(make(name), dst, max_output_bytes=10_000)
    assert not dst.exists()
    with pytest.raises(InvalidAudio, match="longer than"):
        decode_to_wav(make(name), dst, max_duration_s=1.0)
    assert not dst.exists()


# --- content types and sniffing --------------------------------------------------------------


def test_non_audio_content_type_is_refused_even_over_audio(make: Callable[..., Path]) -> None:
    """application/json, text/plain and image/png are UnsupportedMediaType over a valid WAV."""
    for declared in ("application/json", "text/plain; charset=utf-8", "image/png"):
        with pytest.raises(UnsupportedMediaType, match="not audio"):
            decode(make("wav_s16"), declared_type=declared)


def test_bytes_decide_between_audio_types(make: Callable[..., Path]) -> None:
    """audio/mpeg over FLAC decodes as FLAC; audio/wav over WebM as WebM (MediaRecorder)."""
    assert decode(make("flac"), declared_type="audio/mpeg")[0].source_format == "flac"
    assert decode(make("webm_opus"), declared_type="audio/wav")[0].source_format == "webm/opus"
    webm = decode(make("webm_opus"), declared_type="Audio/WebM;codecs=opus")[0]
    assert webm.source_format == "webm/opus"


def test_unrecognised_body_under_audio_type_is_invalid_audio(tmp_path: Path) -> None:
    """Text declared audio/wav is InvalidAudio (broken audio), not UnsupportedMediaType."""
    src = tmp_path / "fake.wav"
    src.write_text("hello, this is not audio at all\n" * 10)
    with pytest.raises(InvalidAudio, match="not audio/wav") as caught:
        decode(src, declared_type="audio/wav")
    assert not isinstance(caught.value, UnsupportedMediaType)
    with pytest.raises(InvalidAudio):
        decode(src, declared_type="audio/mpeg")  # headerless: FFmpeg's MP3 demuxer tries, fails


def test_mp3_starting_mid_frame_decodes_under_its_declared_type(
    make: Callable[..., Path], tmp_path: Path
) -> None:
    """A raw MP3 stream that starts mid-frame is found by FFmpeg when declared audio/mpeg."""
    src = tmp_path / "midframe.mp3"
    src.write_bytes(
        make("mp3", extra=("-write_xing", "0", "-id3v2_version", "0")).read_bytes()[77:]
    )
    assert sniff(src.read_bytes()[:64]) is None
    with pytest.raises(UnsupportedMediaType):
        decode(src)
    result, dst = decode(src, declared_type="audio/mpeg")
    check_canonical(result, dst)
    assert result.source_format == "mp3"


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "wav"),
        (b"RF64\xff\xff\xff\xffWAVEds64", "wav"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64", "mp3"),
        (b"\xff\xfb\x90\x64\x00", "mp3"),
        (b"\xff\xf1\x50\x80\x00", "aac"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead\x01", "ogg/opus"),
        (b"OggS\x00\x02" + bytes(20) + b"\x01\x1e\x01vorbis\x00", "ogg/vorbis"),
        (b"OggS\x00\x02" + bytes(20) + b"\x01\x1e\x01theora\x00", "ogg"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "webm"),
        (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska", "matroska"),
        (b"\x00\x00\x00\x1cftypM4A \x00\x00\x02\x00", "mp4"),
        (b"", None),
        (b'{"json": true}', None),
        (b"\x89PNG\r\n\x1a\n", None),
        (b"\xff\xff\xff\xff", None),  # sync bits, but a reserved MPEG version and bad bitrate
        (b"RIFF\x00\x00\x00\x00AVI LIST", None),
    ],
)
def test_sniff(head: bytes, kind: str | None) -> None:
    """sniff names the container of the first bytes, or None."""
    assert sniff(head) == kind


@pytest.mark.parametrize(
    ("declared", "head", "error"),
    [
        (None, b"RIFF\x00\x00\x00\x00WAVE", None),
        ("application/octet-stream", b"fLaC", None),
        ("audio/mpeg", b"fLaC", None),  # the bytes decide among audio formats
        ("video/webm", b"\x1a\x45\xdf\xa3", None),
        ("audio/mpeg", b"garbage", None),  # headerless stream: FFmpeg decides
        ("audio/aac", b"garbage", None),
        ("audio/flac", b"garbage", InvalidAudio),
        ("audio/wav", b"", InvalidAudio),
        (None, b"garbage", UnsupportedMediaType),
        ("application/octet-stream", b"garbage", UnsupportedMediaType),
        ("application/json", b"RIFF\x00\x00\x00\x00WAVE", UnsupportedMediaType),
        ("audio/aiff", b"FORM", UnsupportedMediaType),
    ],
)
def test_check_content_type(declared: str | None, head: bytes, error: type | None) -> None:
    """check_content_type refuses non-audio types and audio types over non-audio bytes."""
    if error is None:
        check_content_type(declared, head)
    else:
        with pytest.raises(error) as caught:
            check_content_type(declared, head)
        assert type(caught.value) is error


def test_accepted_content_types_are_lowercase_media_types() -> None:
    """The accepted set holds bare lowercase media types (parameters are stripped on lookup)."""
    assert all(t == t.lower() and ";" not in t for t in ACCEPTED_CONTENT_TYPES)
    assert {"audio/wav", "audio/webm", "video/webm", "audio/mp4"} <= ACCEPTED_CONTENT_TYPES


MAGICS = [
    b"",
    b"RIFF\x24\x00\x00\x00WAVEfmt ",
    b"ID3\x03\x00\x00\x00\x00\x00\x10",
    b"\xff\xfb\x90",
    b"\xff\xf1\x50\x80",
    b"fLaC",
    b"OggS\x00\x02",
    b"\x1a\x45\xdf\xa3",
    b"\x00\x00\x00\x18ftypM4A ",
]
DECLARED = [None, "audio/mpeg", "audio/aac", "audio/wav", "audio/ogg", "application/octet-stream"]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    magic=st.sampled_from(MAGICS),
    body=st.binary(max_size=4096),
    declared=st.sampled_from(DECLARED),
)
def test_garbage_raises_only_tapevault_errors(
    tmp_path: Path, magic: bytes, body: bytes, declared: str | None
) -> None:
    """Garbage behind any magic number ends in a tapevault error or a valid WAV, nothing else."""
    need(shutil.which("ffmpeg") is not None, "ffmpeg is not installed")
    src = tmp_path / "garbage"
    src.write_bytes(magic + body)
    try:
        result, dst = decode(src, declared_type=declared)
    except TapevaultError:
        return
    check_canonical(result, dst)


@settings(max_examples=500)
@given(head=st.binary(max_size=64), declared=st.one_of(st.none(), st.text(max_size=30)))
def test_content_check_raises_only_tapevault_errors(head: bytes, declared: str | None) -> None:
    """sniff and check_content_type never fail with anything but a tapevault error."""
    sniff(head)
    with contextlib.suppress(TapevaultError):
        check_content_type(declared, head)
