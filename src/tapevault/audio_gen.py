"""Synthetic WAV audio for ``tapevault demo``, tests and benchmarks (stdlib only).

Two kinds: pure tones in any accepted PCM shape (:func:`tone_wav_bytes` for small bodies,
:func:`write_tone_wav` streamed to disk for large ones), and a short doctor-patient conversation
with two distinct voices (:func:`conversation_wav`), spoken by ``espeak-ng`` when it is installed
and otherwise imitated by two tone patterns of different pitch.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import sys
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

from tapevault.core.wav import (
    MAX_DATA_SIZE,
    SUPPORTED_BITS,
    SUPPORTED_CHANNELS,
    PcmFormat,
    canonical_header,
    parse_wav,
)
from tapevault.errors import InvalidAudio

StrPath = str | os.PathLike[str]

#: The conversation, in speaking order.
CONVERSATION: Final[tuple[tuple[str, str], ...]] = (
    ("doctor", "Good morning, I'm Doctor Patel. What brings you in today?"),
    ("patient", "Hi, doctor. I've had a dry cough and a low fever for about five days now."),
    ("doctor", "I'm sorry to hear that. Any shortness of breath or chest pain?"),
    ("patient", "A little short of breath on the stairs, but no real chest pain."),
    ("doctor", "Are you taking any medications, and do you have any allergies?"),
    ("patient", "Just ibuprofen for the fever. I'm allergic to penicillin, it gives me a rash."),
    ("doctor", "Thanks, that's important. Let me listen to your lungs. Deep breath in, and out."),
    ("patient", "Okay. Is it anything serious? My daughter had bronchitis last month."),
    ("doctor", "Your lungs sound clear and your oxygen is ninety seven percent. It looks viral."),
    ("patient", "That's a relief. Is there anything I should do in the meantime?"),
    ("doctor", "Rest, drink plenty of fluids, and come back if the fever lasts three more days."),
    ("patient", "I will. Thank you, doctor."),
)

# en-gb+f3 silently ignores the variant on espeak-ng 1.51; en-gb-x-rp+f3 applies it.
_ESPEAK_VOICES: Final = {
    "doctor": ("-v", "en-us+m3", "-p", "40"),
    "patient": ("-v", "en-gb-x-rp+f3", "-p", "70"),
}
_ESPEAK_WPM: Final = 160
# Output goes to DEVNULL, not pipes: a stray grandchild holding a pipe open would make
# subprocess.run wait past its timeout.
_ESPEAK_TIMEOUT: Final = 30.0
_SOX_TIMEOUT: Final = 120.0

# The tone voices: fundamental in Hz, and its harmonics' relative amplitudes.
_TONE_F0: Final = {"doctor": 140.0, "patient": 220.0}
_HARMONICS: Final = (1.0, 0.5, 0.25)
_SECONDS_PER_WORD: Final = 0.33
_WORD_GAP: Final = 0.05

TURN_GAP_SECONDS: Final = 0.4
_SILENCE_THRESHOLD: Final = 64  # |sample| at or below this counts as silence when trimming
_TONE_BYTES_LIMIT: Final = 64 << 20
_WRITE_BLOCK: Final = 1 << 20


def tone_wav_bytes(
    seconds: float,
    sample_rate: int = 16000,
    channels: int = 1,
    bits: int = 16,
    freq: float = 440.0,
    amplitude: float = 0.3,
) -> bytes:
    """A whole canonical WAV of a sine tone, in memory; for bodies up to 64 MiB."""
    buf = io.BytesIO()
    _write_tone(buf, seconds, sample_rate, channels, bits, freq, amplitude, _TONE_BYTES_LIMIT)
    return buf.getvalue()


def write_tone_wav(
    path: StrPath,
    seconds: float,
    sample_rate: int = 16000,
    channels: int = 1,
    bits: int = 16,
    freq: float = 440.0,
    amplitude: float = 0.3,
) -> int:
    """Stream a canonical WAV of a sine tone to ``path``; returns the file size in bytes."""
    with open(path, "wb") as out:
        return _write_tone(out, seconds, sample_rate, channels, bits, freq, amplitude, None)


def conversation_wav(path: StrPath, seconds: float = 60.0, sample_rate: int = 16000) -> str:
    """Write a mono 16-bit WAV of a doctor-patient conversation, exactly ``seconds`` long.

    Speaks :data:`CONVERSATION` with ``espeak-ng`` when it is on PATH (two different voices,
    converted to ``sample_rate`` by ``sox`` if present, else by linear interpolation), otherwise
    with two tone voices. Turns are ``TURN_GAP_SECONDS`` apart; the end is padded with silence or
    cut. Returns ``"espeak-ng"`` or ``"tones"``, whichever made the audio.
    """
    fmt = _check_format(sample_rate, 1, 16)
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, not {seconds}")
    total = round(seconds * sample_rate)
    espeak = shutil.which("espeak-ng")
    samples = _espeak_conversation(espeak, seconds, sample_rate) if espeak else None
    engine = "espeak-ng"
    if samples is None:
        samples, engine = _tone_conversation(seconds, sample_rate), "tones"
    del samples[total:]
    with open(path, "wb") as out:
        out.write(canonical_header(fmt, total * 2))
        out.write(_le_bytes(samples))
        padding = (total - len(samples)) * 2
        while padding > 0:
            step = min(padding, _WRITE_BLOCK)
            out.write(bytes(step))
            padding -= step
    return engine


# --- tones -----------------------------------------------------------------------------------


def _check_format(sample_rate: int, channels: int, bits: int) -> PcmFormat:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, not {bits}")
    if channels not in SUPPORTED_CHANNELS:
        raise ValueError(f"channels must be one of {SUPPORTED_CHANNELS}, not {channels}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, not {sample_rate}")
    return PcmFormat(sample_rate=sample_rate, channels=channels, bits_per_sample=bits)


def _write_tone(
    out: BinaryIO,
    seconds: float,
    sample_rate: int,
    channels: int,
    bits: int,
    freq: float,
    amplitude: float,
    limit: int | None,
) -> int:
    fmt = _check_format(sample_rate, channels, bits)
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, not {seconds}")
    if not 0.0 <= amplitude <= 1.0:
        raise ValueError(f"amplitude must be within 0-1, not {amplitude}")
    frames = round(seconds * sample_rate)
    data_size = frames * fmt.block_align
    if limit is not None and data_size > limit:
        raise ValueError(f"{data_size} bytes is too large to build in memory; use write_tone_wav")
    if data_size > MAX_DATA_SIZE:
        raise ValueError(f"{data_size} bytes does not fit in a WAV file")
    written = out.write(canonical_header(fmt, data_size))
    for block in _tone_blocks(fmt, frames, freq, amplitude):
        written += out.write(block)
    if data_size & 1:
        written += out.write(b"\x00")
    return written


def _tone_blocks(fmt: PcmFormat, frames: int, freq: float, amplitude: float) -> Iterator[bytes]:
    """The tone's PCM bytes, one second of frames at a time."""
    rate = fmt.sample_rate
    # With a whole number of cycles per second every one-second block is the same.
    periodic = float(freq).is_integer()
    cached: bytes | None = None
    for start in range(0, frames, rate):
        count = min(rate, frames - start)
        if periodic and count == rate:
            if cached is None:
                cached = _tone_pcm(fmt, 0, rate, freq, amplitude)
            yield cached
        else:
            yield _tone_pcm(fmt, 0 if periodic else start, count, freq, amplitude)


def _tone_pcm(fmt: PcmFormat, start: int, count: int, freq: float, amplitude: float) -> bytes:
    step = 2 * math.pi * freq / fmt.sample_rate
    peak = amplitude * ((1 << (fmt.bits_per_sample - 1)) - 1)
    values = [round(peak * math.sin(step * n)) for n in range(start, start + count)]
    return _interleave(_encode(values, fmt.bits_per_sample), fmt.bits_per_sample // 8, fmt.channels)


def _encode(values: list[int], bits: int) -> bytes:
    """Little-endian PCM bytes of signed sample values (8-bit PCM is unsigned)."""
    if bits == 8:
        return bytes(v + 128 for v in values)
    if bits == 16:
        return _le_bytes(array("h", values))
    wide = array("i", [v << 8 for v in values])
    raw = _le_bytes(wide)
    packed = bytearray(len(values) * 3)
    for k in range(3):  # keep the top three bytes of each little-endian int32
        packed[k::3] = raw[k + 1 :: 4]
    return bytes(packed)


def _interleave(mono: bytes, width: int, channels: int) -> bytes:
    if channels == 1:
        return mono
    frame = width * channels
    out = bytearray(len(mono) * channels)
    for ch in range(channels):
        for k in range(width):
            out[ch * width + k :: frame] = mono[k::width]
    return bytes(out)


def _le_bytes(samples: array[int]) -> bytes:
    if sys.byteorder == "little":
        return samples.tobytes()
    swapped = array(samples.typecode, samples)
    swapped.byteswap()
    return swapped.tobytes()


# --- the conversation ------------------------------------------------------------------------


def _espeak_conversation(espeak: str, seconds: float, rate: int) -> array[int] | None:
    """The conversation spoken by espeak-ng at ``rate``, or None if espeak-ng let us down."""
    try:
        with tempfile.TemporaryDirectory(prefix="tapevault-tts-") as tmp:
            native, native_rate = _speak_turns(espeak, Path(tmp), seconds)
            if native_rate == rate:
                return native
            sox = shutil.which("sox")
            if sox is not None:
                converted = _sox_resample(sox, Path(tmp), native, native_rate, rate)
                if converted is not None:
                    return converted
            return _linear_resample(native, native_rate, rate)
    except (OSError, subprocess.SubprocessError, InvalidAudio, ValueError):
        return None


def _speak_turns(espeak: str, tmp: Path, seconds: float) -> tuple[array[int], int]:
    """Each turn spoken, trimmed and joined with pauses, until ``seconds`` are covered."""
    joined = array("h")
    native_rate = 0
    for i, (speaker, text) in enumerate(CONVERSATION):
        out = tmp / f"turn{i}.wav"
        subprocess.run(
            [espeak, *_ESPEAK_VOICES[speaker], "-s", str(_ESPEAK_WPM), "-w", str(out), text],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=_ESPEAK_TIMEOUT,
            check=True,
        )
        samples, turn_rate = _read_pcm16_mono(out)
        if native_rate and turn_rate != native_rate:
            raise ValueError("espeak-ng changed its sample rate between turns")
        native_rate = turn_rate
        if joined:
            joined.extend(array("h", bytes(2 * round(TURN_GAP_SECONDS * native_rate))))
        joined.extend(_trim_silence(samples))
        if len(joined) >= seconds * native_rate:
            break
    return joined, native_rate


def _read_pcm16_mono(path: Path) -> tuple[array[int], int]:
    with open(path, "rb") as f:
        info = parse_wav(f, os.fstat(f.fileno()).st_size)
        if info.fmt.channels != 1 or info.fmt.bits_per_sample != 16:
            raise ValueError(f"expected mono 16-bit audio in {path.name}, got {info.fmt}")
        f.seek(info.data_offset)
        samples = array("h", f.read(info.data_size))
    if sys.byteorder != "little":
        samples.byteswap()
    return samples, info.fmt.sample_rate


def _trim_silence(samples: array[int]) -> array[int]:
    start = next((i for i, v in enumerate(samples) if abs(v) > _SILENCE_THRESHOLD), len(samples))
    end = len(samples)
    while end > start and abs(samples[end - 1]) <= _SILENCE_THRESHOLD:
        end -= 1
    return samples[start:end]


def _sox_resample(
    sox: str, tmp: Path, samples: array[int], src_rate: int, dst_rate: int
) -> array[int] | None:
    src, dst = tmp / "joined.wav", tmp / "resampled.wav"
    fmt = PcmFormat(sample_rate=src_rate, channels=1, bits_per_sample=16)
    src.write_bytes(canonical_header(fmt, len(samples) * 2) + _le_bytes(samples))
    done = subprocess.run(
        [sox, "-q", "-D", str(src), "-r", str(dst_rate), "-c", "1", "-b", "16", str(dst)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=_SOX_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        return None
    resampled, rate = _read_pcm16_mono(dst)
    return resampled if rate == dst_rate else None


def _linear_resample(samples: array[int], src_rate: int, dst_rate: int) -> array[int]:
    """Resample by straight-line interpolation; crude, but speech stays intelligible."""
    if not samples:
        return array("h")
    count = len(samples) * dst_rate // src_rate
    ratio = src_rate / dst_rate
    last = len(samples) - 1
    out = array("h", bytes(2 * count))
    for j in range(count):
        x = j * ratio
        i = int(x)
        if i >= last:
            out[j] = samples[last]
            continue
        frac = x - i
        out[j] = round(samples[i] + (samples[i + 1] - samples[i]) * frac)
    return out


def _tone_conversation(seconds: float, rate: int) -> array[int]:
    """The conversation imitated by two tone voices, one syllable-shaped burst per syllable."""
    out = array("h")
    limit = seconds * rate
    for speaker, text in CONVERSATION:
        if out:
            out.extend(array("h", bytes(2 * round(TURN_GAP_SECONDS * rate))))
        words = text.split()
        for w, word in enumerate(words):
            # Intonation falls gently over the turn, as statements do.
            f0 = _TONE_F0[speaker] * (1.08 - 0.16 * w / max(1, len(words) - 1))
            syllables = _syllables(word)
            length = round(_SECONDS_PER_WORD * rate * (0.6 + 0.4 * syllables) / syllables)
            for _ in range(syllables):
                out.extend(_syllable(f0, length, rate))
            out.extend(array("h", bytes(2 * round(_WORD_GAP * rate))))
        if len(out) >= limit:
            break
    return out


def _syllables(word: str) -> int:
    """A rough English syllable count: runs of vowels."""
    count, previous = 0, False
    for ch in word.lower():
        vowel = ch in "aeiouy"
        count += vowel and not previous
        previous = vowel
    return max(1, count)


def _syllable(f0: float, length: int, rate: int) -> array[int]:
    peak = 0.6 * 32767 / sum(_HARMONICS)
    steps = [2 * math.pi * f0 * (h + 1) / rate for h in range(len(_HARMONICS))]
    shape = math.pi / length
    values = array("h", bytes(2 * length))
    for n in range(length):
        envelope = math.sin(shape * n) ** 2  # rises and falls like a spoken syllable
        wave = sum(a * math.sin(s * n) for a, s in zip(_HARMONICS, steps, strict=True))
        values[n] = round(peak * envelope * wave)
    return values
