"""Synthetic audio for demos, tests and benchmarks (tapevault.audio_gen)."""

from __future__ import annotations

import io
import itertools
import shutil
import wave
from array import array
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tapevault import audio_gen
from tapevault.audio_gen import conversation_wav, tone_wav_bytes, write_tone_wav
from tapevault.core.wav import PcmFormat, WavInfo, parse_wav

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed")


def parse_file(path: Path) -> WavInfo:
    """parse_wav over a file on disk."""
    with path.open("rb") as f:
        return parse_wav(f, path.stat().st_size)


def mono16(raw: bytes) -> tuple[np.ndarray, int]:
    """The samples and rate of a mono 16-bit WAV, via parse_wav."""
    info = parse_wav(io.BytesIO(raw), len(raw))
    assert (info.fmt.channels, info.fmt.bits_per_sample) == (1, 16)
    data = raw[info.data_offset : info.data_offset + info.data_size]
    return np.frombuffer(data, "<i2").astype(np.float64), info.fmt.sample_rate


def decode(raw: bytes) -> tuple[np.ndarray, WavInfo]:
    """Samples as floats scaled to -1..1, shaped (frames, channels), of any accepted WAV."""
    info = parse_wav(io.BytesIO(raw), len(raw))
    data = raw[info.data_offset : info.data_offset + info.data_size]
    bits, channels = info.fmt.bits_per_sample, info.fmt.channels
    if bits == 8:
        values = np.frombuffer(data, np.uint8).astype(np.float64) - 128
    elif bits == 16:
        values = np.frombuffer(data, "<i2").astype(np.float64)
    else:
        triples = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        values = np.where(ints >= 1 << 23, ints - (1 << 24), ints).astype(np.float64)
    return values.reshape(-1, channels) / float(1 << (bits - 1)), info


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """The frequency of the largest FFT bin."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


# --- tones -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 16, 24])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_tone_parses_with_requested_shape(bits: int, channels: int, rate: int) -> None:
    """A tone WAV has the requested format, length, frequency and amplitude in every channel."""
    raw = tone_wav_bytes(0.5, sample_rate=rate, channels=channels, bits=bits, freq=1000.0)
    samples, info = decode(raw)
    assert info.fmt == PcmFormat(rate, channels, bits)
    assert info.frames == rate // 2
    assert info.duration_ms == 500
    for ch in range(channels):
        assert dominant_hz(samples[:, ch], rate) == pytest.approx(1000.0, abs=3)
        assert np.max(np.abs(samples[:, ch])) == pytest.approx(0.3, abs=0.02)
    if channels == 2:
        assert np.array_equal(samples[:, 0], samples[:, 1])


def test_tone_8_bit_is_unsigned_around_128() -> None:
    """8-bit PCM is unsigned: silence is 128, and the tone swings around it."""
    raw = tone_wav_bytes(0.1, sample_rate=8000, bits=8, amplitude=0.5)
    data = np.frombuffer(raw[44:], np.uint8).astype(int)
    assert data.min() == pytest.approx(128 - 63, abs=2)
    assert data.max() == pytest.approx(128 + 63, abs=2)


def test_tone_odd_8_bit_has_pad_byte() -> None:
    """An odd number of 8-bit mono frames is followed by a pad byte, and wave still reads it."""
    raw = tone_wav_bytes(101 / 8000, sample_rate=8000, bits=8)
    assert len(raw) == 44 + 101 + 1
    with wave.open(io.BytesIO(raw)) as reader:
        assert reader.getnframes() == 101


def test_write_tone_matches_in_memory_tone(tmp_path: Path) -> None:
    """The streamed file equals the in-memory body and its size is returned."""
    path = tmp_path / "tone.wav"
    size = write_tone_wav(path, 2.5, sample_rate=8000, channels=2, bits=24, freq=300.0)
    assert size == path.stat().st_size
    assert path.read_bytes() == tone_wav_bytes(2.5, sample_rate=8000, channels=2, bits=24, freq=300)


def test_write_tone_phase_is_continuous_across_blocks(tmp_path: Path) -> None:
    """A non-integer frequency stays one unbroken sine across the one-second blocks."""
    path = tmp_path / "tone.wav"
    write_tone_wav(path, 3.0, sample_rate=8000, freq=441.7, amplitude=0.5)
    samples, rate = mono16(path.read_bytes())
    n = np.arange(len(samples))
    expected = np.round(0.5 * 32767 * np.sin(2 * np.pi * 441.7 * n / rate))
    assert np.max(np.abs(samples - expected)) <= 1


def test_write_tone_large_file_streams(tmp_path: Path) -> None:
    """A long tone is written in blocks and parses to the requested duration."""
    path = tmp_path / "long.wav"
    size = write_tone_wav(path, 600.0, sample_rate=16000)
    info = parse_file(path)
    assert size == 44 + 600 * 16000 * 2
    assert info.duration_ms == 600_000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits": 32},
        {"channels": 3},
        {"sample_rate": 0},
        {"seconds": -1.0},
        {"amplitude": 1.5},
        {"seconds": 10_000.0},  # too big to build in memory
    ],
)
def test_tone_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    """Impossible or oversized tones are refused with ValueError."""
    args: dict[str, float] = {"seconds": 0.1, **kwargs}
    with pytest.raises(ValueError):
        tone_wav_bytes(**args)  # type: ignore[arg-type]


# --- the conversation ------------------------------------------------------------------------


def voice_labels(samples: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Pitch (autocorrelation, 70-400 Hz) of each voiced 40 ms frame, and a low/high label."""
    size = int(0.04 * rate)
    pitches = []
    for start in range(0, len(samples) - size + 1, size):
        frame = samples[start : start + size]
        if np.sqrt(np.mean(frame**2)) < 300:
            continue
        frame = frame - frame.mean()
        ac = np.correlate(frame, frame, "full")[size - 1 :]
        lo, hi = int(rate / 400), int(rate / 70)
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            pitches.append(rate / lag)
    f0 = np.array(pitches)
    split = np.sqrt(np.percentile(f0, 10) * np.percentile(f0, 90))
    return f0, (f0 > split).astype(int)


def turns_of(labels: np.ndarray, min_frames: int = 8) -> list[int]:
    """The speaker sequence: runs of at least ``min_frames`` same-labelled frames, merged."""
    runs: list[list[int]] = []
    for label in labels.tolist():
        if runs and runs[-1][0] == label:
            runs[-1][1] += 1
        else:
            runs.append([label, 1])
    turns: list[int] = []
    for label, length in runs:
        if length >= min_frames and (not turns or turns[-1] != label):
            turns.append(label)
    return turns


def check_conversation(path: Path, seconds: float, rate: int) -> None:
    """Mono 16-bit at ``rate``, ``seconds`` long, two alternating voices of distinct pitch."""
    info = parse_file(path)
    assert info.fmt == PcmFormat(rate, 1, 16)
    assert info.duration_ms == round(seconds * 1000)
    samples, _ = mono16(path.read_bytes())
    f0, labels = voice_labels(samples, rate)
    low, high = f0[labels == 0], f0[labels == 1]
    assert min(len(low), len(high)) >= 0.2 * len(f0), "one voice barely speaks"
    assert np.median(high) / np.median(low) >= 1.4, "the two voices have similar pitch"
    turns = turns_of(labels)
    assert turns[0] == 0, "the doctor (lower voice) speaks first"
    assert len(turns) >= 8, f"expected alternating turns, got {turns}"


def test_conversation_lines_alternate() -> None:
    """The script alternates doctor and patient, about ten short lines."""
    speakers = [speaker for speaker, _ in audio_gen.CONVERSATION]
    assert speakers[0] == "doctor"
    assert all(a != b for a, b in itertools.pairwise(speakers))
    assert 8 <= len(speakers) <= 14


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Hide the named programs from shutil.which."""

    def hide(*names: str) -> None:
        real = shutil.which

        def which(cmd: str, *args: object, **kwargs: object) -> str | None:
            return None if cmd in names else real(cmd)

        monkeypatch.setattr(shutil, "which", which)

    return hide


def test_conversation_tones_fallback(tmp_path: Path, without: Callable[..., None]) -> None:
    """Without espeak-ng the conversation is two tone voices of different pitch."""
    without("espeak-ng")
    path = tmp_path / "conv.wav"
    assert conversation_wav(path, seconds=60.0) == "tones"
    check_conversation(path, 60.0, 16000)


def test_conversation_tones_short_and_8k(tmp_path: Path, without: Callable[..., None]) -> None:
    """A short request is cut to length at the requested rate."""
    without("espeak-ng")
    path = tmp_path / "conv.wav"
    assert conversation_wav(path, seconds=3.3, sample_rate=8000) == "tones"
    info = parse_file(path)
    assert info.fmt == PcmFormat(8000, 1, 16)
    assert info.frames == 26400


def test_conversation_pads_with_silence(tmp_path: Path, without: Callable[..., None]) -> None:
    """A request longer than the script is padded with silence to the exact length."""
    without("espeak-ng")
    path = tmp_path / "conv.wav"
    conversation_wav(path, seconds=120.0, sample_rate=8000)
    samples, rate = mono16(path.read_bytes())
    assert len(samples) == 120 * rate
    assert not samples[-10 * rate :].any()


@needs_espeak
@pytest.mark.parametrize("rate", [16000, 8000, 48000])
def test_conversation_espeak(tmp_path: Path, rate: int) -> None:
    """With espeak-ng two distinct synthetic voices speak the turns at the requested rate."""
    path = tmp_path / "conv.wav"
    assert conversation_wav(path, seconds=60.0, sample_rate=rate) == "espeak-ng"
    check_conversation(path, 60.0, rate)


@needs_espeak
def test_conversation_espeak_without_sox(tmp_path: Path, without: Callable[..., None]) -> None:
    """Without sox espeak's output is resampled in Python, still with two voices."""
    without("sox")
    path = tmp_path / "conv.wav"
    assert conversation_wav(path, seconds=60.0, sample_rate=16000) == "espeak-ng"
    check_conversation(path, 60.0, 16000)


def fake_program(tmp_path: Path, script: str) -> str:
    """An executable shell script standing in for espeak-ng."""
    path = tmp_path / "fake-espeak-ng"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return str(path)


def test_conversation_falls_back_when_espeak_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An espeak-ng that exits with an error leads to the tones, not an error."""
    fake = fake_program(tmp_path, "exit 1")
    monkeypatch.setattr(shutil, "which", lambda cmd: fake if cmd == "espeak-ng" else None)
    assert conversation_wav(tmp_path / "conv.wav", seconds=2.0) == "tones"


def test_conversation_falls_back_when_espeak_writes_garbage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An espeak-ng whose output is not a WAV file leads to the tones."""
    fake = fake_program(tmp_path, 'while [ "$1" != "-w" ]; do shift; done; echo junk > "$2"')
    monkeypatch.setattr(shutil, "which", lambda cmd: fake if cmd == "espeak-ng" else None)
    assert conversation_wav(tmp_path / "conv.wav", seconds=2.0) == "tones"


def test_conversation_never_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hanging espeak-ng is killed after the timeout and the tones are used."""
    fake = fake_program(tmp_path, "exec sleep 30")
    monkeypatch.setattr(shutil, "which", lambda cmd: fake if cmd == "espeak-ng" else None)
    monkeypatch.setattr(audio_gen, "_ESPEAK_TIMEOUT", 0.5)
    assert conversation_wav(tmp_path / "conv.wav", seconds=2.0) == "tones"


def test_linear_resample_keeps_a_tone() -> None:
    """The Python resampler keeps a tone's frequency and length."""
    raw = tone_wav_bytes(1.0, sample_rate=22050, freq=300.0)
    native, rate = mono16(raw)
    out = audio_gen._linear_resample(array("h", native.astype(np.int16).tolist()), rate, 16000)
    resampled = np.array(out, dtype=np.float64)
    assert len(resampled) == 16000
    assert dominant_hz(resampled, 16000) == pytest.approx(300.0, abs=2)
