"""Raw stream audio (what a WebSocket or Twilio delivers) to canonical PCM WAV.

G.711 μ-law and A-law are expanded to 16-bit PCM through 256-entry tables (ITU-T G.711), with
numpy doing the lookup, so an hour of 8 kHz audio converts in well under a second.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tapevault.core.wav import PcmFormat, canonical_header

ENCODINGS = {"pcm_s16le": 2, "pcm_mulaw": 1, "pcm_alaw": 1}
CHUNK = 1 << 20


def _ulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype("<i2")


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    return np.where(sign != 0, magnitude, -magnitude).astype("<i2")


TABLES = {"pcm_mulaw": _ulaw_table(), "pcm_alaw": _alaw_table()}
SILENCE = {"pcm_s16le": b"\x00\x00", "pcm_mulaw": b"\xff", "pcm_alaw": b"\xd5"}


def expand(encoding: str, data: bytes) -> bytes:
    """Raw samples of ``encoding`` as 16-bit little-endian PCM."""
    if encoding == "pcm_s16le":
        return data
    return TABLES[encoding][np.frombuffer(data, dtype=np.uint8)].tobytes()


@dataclass(frozen=True, slots=True)
class WavFacts:
    fmt: PcmFormat
    frames: int
    size: int
    sha256: str

    @property
    def duration_ms(self) -> int:
        return round(self.frames * 1000 / self.fmt.sample_rate) if self.fmt.sample_rate else 0


def whole_frames(size: int, encoding: str, channels: int) -> int:
    """The byte length of the whole frames within ``size`` (a crashed writer's last frame may be
    partial)."""
    frame = ENCODINGS[encoding] * channels
    return size - size % frame


def raw_to_wav(src: Path, dst: Path, *, encoding: str, sample_rate: int, channels: int) -> WavFacts:
    """Write ``dst`` as a canonical WAV of the raw samples in ``src`` (whole frames only; a
    node-local temporary, made durable by the store it is promoted into), and return its
    format, length and sha256."""
    size = whole_frames(src.stat().st_size, encoding, channels)
    frames = size // (ENCODINGS[encoding] * channels)
    fmt = PcmFormat(sample_rate=sample_rate, channels=channels, bits_per_sample=16)
    header = canonical_header(fmt, frames * fmt.block_align)
    digest = hashlib.sha256(header)
    with src.open("rb") as inp, dst.open("wb") as out:
        out.write(header)
        remaining = size
        while remaining:
            data = inp.read(min(CHUNK, remaining))
            if not data:
                break
            remaining -= len(data)
            pcm = expand(encoding, data)
            digest.update(pcm)
            out.write(pcm)
        total = out.tell()
    return WavFacts(fmt=fmt, frames=frames, size=total, sha256=digest.hexdigest())
