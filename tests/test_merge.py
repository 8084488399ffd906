"""Tests for tapevault.ingest.merge: several recordings mixed onto one mono 16-bit timeline."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.core.wav import PcmFormat, WavInfo, canonical_header, parse_wav
from tapevault.errors import InvalidAudio
from tapevault.ingest import merge
from tapevault.ingest.merge import MergedAudio, MergeInput, merge_to_wav, sequential_starts

WINDOW_MS = 50


def write_wav(path: Path, samples: npt.NDArray[np.int64], rate: int, bits: int = 16) -> Path:
    """Write ``samples`` (frames x channels, signed values of ``bits``) as a canonical WAV."""
    frames = samples.reshape(len(samples), -1)
    fmt = PcmFormat(rate, frames.shape[1], bits)
    if bits == 8:
        data = (frames + 128).astype(np.uint8).tobytes()
    elif bits == 16:
        data = frames.astype("<i2").tobytes()
    else:
        data = frames.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    path.write_bytes(canonical_header(fmt, len(data)) + data + b"\x00" * (len(data) & 1))
    return path


def sine(freq: float, seconds: float, rate: int, peak: float) -> npt.NDArray[np.int64]:
    """A sine tone of ``peak`` amplitude, as integers."""
    n = np.arange(round(seconds * rate))
    return np.rint(peak * np.sin(2 * np.pi * freq * n / rate)).astype(np.int64)


def read_output(path: Path) -> tuple[WavInfo, npt.NDArray[np.int16]]:
    """The parsed header and samples of a merged WAV."""
    with path.open("rb") as f:
        info = parse_wav(f, os.fstat(f.fileno()).st_size)
        f.seek(info.data_offset)
        samples = np.frombuffer(f.read(info.data_size), "<i2").astype(np.int16)
    return info, samples


def window_rms(samples: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.float64]:
    """RMS of each whole 50 ms window."""
    size = rate * WINDOW_MS // 1000
    windows = samples[: len(samples) // size * size].reshape(-1, size).astype(np.float64)
    rms: npt.NDArray[np.float64] = np.sqrt((windows**2).mean(axis=1))
    return rms


def dominant_hz(window: npt.NDArray[np.int16], rate: int) -> float:
    """The frequency of the strongest FFT bin of ``window``."""
    spectrum = np.abs(np.fft.rfft(window.astype(np.float64)))
    return float(np.fft.rfftfreq(len(window), 1 / rate)[int(np.argmax(spectrum))])


def leftovers(directory: Path, keep: set[str]) -> set[str]:
    """Files in ``directory`` other than ``keep``."""
    return set(os.listdir(directory)) - keep


def test_two_voices_land_at_their_times(tmp_path: Path) -> None:
    """Inbound 440 Hz at 8 kHz at 0 ms and outbound 1 kHz at 16 kHz at 1500 ms, by energy."""
    inbound = tmp_path / "in.wav"
    outbound = tmp_path / "out.wav"
    inbound.write_bytes(tone_wav_bytes(1.0, 8000, freq=440.0, amplitude=0.5))
    outbound.write_bytes(tone_wav_bytes(1.0, 16000, freq=1000.0, amplitude=0.5))
    dst = tmp_path / "call-merged.wav"
    result = merge_to_wav([MergeInput(inbound, 0), MergeInput(outbound, 1500)], dst)

    info, samples = read_output(dst)
    assert result.sample_rate == info.fmt.sample_rate == 16000
    assert abs(len(samples) - 40000) <= 16 * 3  # 2.5 s within 3 ms
    rms = window_rms(samples, 16000)
    loud = 0.5 * 32767 / np.sqrt(2)
    voice_in, gap, voice_out = rms[0:20], rms[20:30], rms[30:50]
    assert np.all(np.abs(voice_in - loud) < 0.05 * loud)
    assert np.all(np.abs(voice_out - loud) < 0.05 * loud)
    assert np.all(gap < 0.01 * loud)
    size = 16000 * WINDOW_MS // 1000
    for w in range(50):
        if w < 20 or w >= 30:
            expected = 440.0 if w < 20 else 1000.0
            assert dominant_hz(samples[w * size : (w + 1) * size], 16000) == expected, w


def test_overlap_sums_and_saturates(tmp_path: Path) -> None:
    """Overlapping inputs are summed, not averaged, and clipped instead of wrapping around."""
    quiet = write_wav(tmp_path / "quiet.wav", sine(500, 1.0, 8000, 8000), 8000)
    loud = write_wav(tmp_path / "loud.wav", sine(500, 1.0, 8000, 32767), 8000)
    summed = tmp_path / "summed.wav"
    merge_to_wav([MergeInput(quiet, 0), MergeInput(quiet, 0)], summed)
    _, two = read_output(summed)
    np.testing.assert_array_equal(two, 2 * sine(500, 1.0, 8000, 8000))

    clipped = tmp_path / "clipped.wav"
    merge_to_wav([MergeInput(loud, 0), MergeInput(loud, 500)], clipped)
    _, out = read_output(clipped)
    tone = sine(500, 1.0, 8000, 32767)
    assert len(out) == 12000
    np.testing.assert_array_equal(out[:4000], tone[:4000])  # before the overlap: one voice
    overlap = out[4000:8000].astype(np.int64)
    expected = np.clip(tone[4000:8000] + tone[:4000], -32768, 32767)
    np.testing.assert_array_equal(overlap, expected)
    assert overlap.max() == 32767 and overlap.min() == -32768
    assert np.all(np.sign(overlap) == np.sign(tone[4000:8000] + tone[:4000]))  # no wrap-around
    np.testing.assert_array_equal(out[8000:], tone[4000:])


def test_stereo_is_downmixed_to_the_mean(tmp_path: Path) -> None:
    """A stereo input becomes the mean of its two channels."""
    left, right = sine(300, 0.5, 16000, 20000), sine(300, 0.5, 16000, 4000)
    stereo = write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000)
    dst = tmp_path / "merged.wav"
    result = merge_to_wav([MergeInput(stereo, 0)], dst)
    _, out = read_output(dst)
    assert result.channels == 1 and result.frames == 8000
    assert np.abs(out.astype(np.int64) - (left + right) / 2).max() <= 0.5


@pytest.mark.parametrize(("bits", "tolerance"), [(8, 300), (24, 1)])
def test_8_and_24_bit_match_16_bit(tmp_path: Path, bits: int, tolerance: int) -> None:
    """8-bit and 24-bit inputs give the 16-bit waveform, within their quantisation."""
    reference = tmp_path / "16.wav"
    other = tmp_path / f"{bits}.wav"
    reference.write_bytes(tone_wav_bytes(0.5, 8000, bits=16, freq=250.0, amplitude=0.8))
    other.write_bytes(tone_wav_bytes(0.5, 8000, bits=bits, freq=250.0, amplitude=0.8))
    merge_to_wav([MergeInput(reference, 0)], tmp_path / "a.wav")
    merge_to_wav([MergeInput(other, 0)], tmp_path / "b.wav")
    _, a = read_output(tmp_path / "a.wav")
    _, b = read_output(tmp_path / "b.wav")
    assert len(a) == len(b) == 4000
    assert np.abs(a.astype(np.int64) - b).max() <= tolerance


def test_24_bit_negative_samples_keep_their_sign(tmp_path: Path) -> None:
    """24-bit samples are sign-extended: their top 16 bits, floored, whatever the sign."""
    values = np.array([-(1 << 23), -257, -256, -1, 0, 255, 256, (1 << 23) - 1], dtype=np.int64)
    src = write_wav(tmp_path / "24.wav", values, 8000, bits=24)
    merge_to_wav([MergeInput(src, 0)], tmp_path / "m.wav")
    _, out = read_output(tmp_path / "m.wav")
    np.testing.assert_array_equal(out, values >> 8)


def test_sequential_starts() -> None:
    """sequential_starts gives [0, d0, d0+d1, ...] and rejects negative durations."""
    assert sequential_starts([1000, 500, 250]) == [0, 1000, 1500]
    assert sequential_starts([]) == []
    assert sequential_starts([0, 0, 7]) == [0, 0, 0]
    with pytest.raises(ValueError):
        sequential_starts([100, -1])


def test_back_to_back_segments_concatenate(tmp_path: Path) -> None:
    """Three segments placed by sequential_starts land one right after another."""
    tones = [sine(f, s, 16000, 10000) for f, s in ((200, 1.0), (700, 0.5), (1500, 0.25))]
    paths = [write_wav(tmp_path / f"seg{i}.wav", t, 16000) for i, t in enumerate(tones)]
    starts = sequential_starts([1000, 500, 250])
    dst = tmp_path / "merged.wav"
    result = merge_to_wav([MergeInput(p, s) for p, s in zip(paths, starts, strict=True)], dst)
    _, out = read_output(dst)
    assert result.frames == 28000
    np.testing.assert_array_equal(out, np.concatenate(tones))


def test_digest_size_and_format(tmp_path: Path) -> None:
    """sha256 and size describe the file on disk, a 16-bit mono WAV at the common rate."""
    a = write_wav(tmp_path / "a.wav", np.stack([sine(400, 0.3, 22050, 9000)] * 2, axis=1), 22050)
    b = write_wav(tmp_path / "b.wav", sine(900, 0.4, 11025, 9000), 11025, bits=8)
    dst = tmp_path / "merged.wav"
    dst.write_bytes(b"old content that must be replaced" * 1000)
    result = merge_to_wav([MergeInput(a, 100), MergeInput(b, 0)], dst, block_ms=70)
    raw = dst.read_bytes()
    assert result.size == len(raw) == dst.stat().st_size
    assert result.sha256 == hashlib.sha256(raw).hexdigest()
    info, _ = read_output(dst)
    assert info.fmt == PcmFormat(22050, 1, 16)
    assert info.data_offset == 44
    assert result == MergedAudio(22050, 1, 16, info.frames, len(raw), result.sha256)
    assert info.frames == round(0.1 * 22050) + round(0.3 * 22050)
    assert leftovers(tmp_path, {"a.wav", "b.wav", "merged.wav"}) == set()


def test_block_size_does_not_change_the_result(tmp_path: Path) -> None:
    """Mixing in small blocks gives the same bytes as in large ones."""
    a = write_wav(tmp_path / "a.wav", sine(440, 0.7, 8000, 15000), 8000)
    b = write_wav(tmp_path / "b.wav", np.stack([sine(950, 0.6, 16000, 15000)] * 2, axis=1), 16000)
    inputs = [MergeInput(a, 30), MergeInput(b, 333)]
    small = merge_to_wav(inputs, tmp_path / "small.wav", block_ms=7)
    large = merge_to_wav(inputs, tmp_path / "large.wav", block_ms=5000)
    assert small.sha256 == large.sha256


def test_empty_inputs_contribute_nothing(tmp_path: Path) -> None:
    """A header-only WAV adds no audio; its rate still counts, and all-empty gives 0 frames."""
    empty = tmp_path / "empty.wav"
    empty.write_bytes(canonical_header(PcmFormat(32000, 2, 16), 0))
    tone = write_wav(tmp_path / "tone.wav", sine(400, 0.5, 16000, 9000), 16000)
    result = merge_to_wav([MergeInput(tone, 0), MergeInput(empty, 9000)], tmp_path / "m.wav")
    assert result.sample_rate == 32000
    assert result.frames == 16000

    nothing = tmp_path / "nothing.wav"
    result = merge_to_wav([MergeInput(empty, 500)], nothing)
    assert result == MergedAudio(32000, 1, 16, 0, 44, result.sha256)
    assert nothing.read_bytes() == canonical_header(PcmFormat(32000, 1, 16), 0)


def test_errors(tmp_path: Path) -> None:
    """No inputs or a negative start is a ValueError; a file that is not a WAV is InvalidAudio."""
    tone = write_wav(tmp_path / "tone.wav", sine(400, 0.1, 8000, 9000), 8000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a WAV, but exactly as long as a WAV header".ljust(44))
    short_header = tmp_path / "short.wav"
    short_header.write_bytes(canonical_header(PcmFormat(8000, 1, 16), 100))
    dst = tmp_path / "merged.wav"
    with pytest.raises(ValueError):
        merge_to_wav([], dst)
    with pytest.raises(ValueError):
        merge_to_wav([MergeInput(tone, -1)], dst)
    with pytest.raises(InvalidAudio, match="not a WAV file"):
        merge_to_wav([MergeInput(tone, 0), MergeInput(junk, 0)], dst)
    with pytest.raises(ValueError, match="overwrite"):
        merge_to_wav([MergeInput(tone, 0)], tmp_path / "." / "tone.wav")
    with pytest.raises(InvalidAudio, match="truncated"):
        merge_to_wav([MergeInput(short_header, 0)], dst)
    assert leftovers(tmp_path, {"tone.wav", "junk.wav", "short.wav"}) == set()


def test_temporary_files_removed_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spools are removed, and no half-written output is left, when the merge fails midway."""
    a = write_wav(tmp_path / "a.wav", sine(440, 0.5, 8000, 9000), 8000)
    b = write_wav(tmp_path / "b.wav", np.stack([sine(900, 0.5, 16000, 9000)] * 2, axis=1), 16000)
    inputs = [MergeInput(a, 0), MergeInput(b, 200)]
    seen: list[set[str]] = []

    def failing_clip(*args: object, **kwargs: object) -> None:
        seen.append(leftovers(tmp_path, {"a.wav", "b.wav", "merged.wav"}))
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(merge.np, "clip", failing_clip)
    with pytest.raises(RuntimeError, match="disk on fire"):
        merge_to_wav(inputs, tmp_path / "merged.wav")
    assert len(seen[0]) == 2  # both inputs were spooled (resampled, downmixed) at the time
    assert leftovers(tmp_path, {"a.wav", "b.wav"}) == set()


def test_long_input_has_bounded_memory(tmp_path: Path) -> None:
    """Ten minutes of 44.1 kHz stereo, resampled to 48 kHz, merge in well under 32 MB."""
    rate, seconds = 44100, 600
    long_path = tmp_path / "long.wav"
    one_second = np.stack([sine(440, 1.0, rate, 12000), sine(660, 1.0, rate, 6000)], axis=1)
    chunk = one_second.astype("<i2").tobytes()
    with long_path.open("wb") as f:
        f.write(canonical_header(PcmFormat(rate, 2, 16), len(chunk) * seconds))
        for _ in range(seconds):
            f.write(chunk)
    short = write_wav(tmp_path / "short.wav", sine(1000, 1.0, 48000, 9000), 48000)
    dst = tmp_path / "merged.wav"

    tracemalloc.start()
    try:
        result = merge_to_wav([MergeInput(long_path, 0), MergeInput(short, 1000)], dst)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20
    assert abs(result.frames - seconds * 48000) <= 48 * 3  # within 3 ms
    assert result.size == dst.stat().st_size
    assert leftovers(tmp_path, {"long.wav", "short.wav", "merged.wav"}) == set()
