"""Waveform peaks: min/max per block of samples, in BBC audiowaveform's JSON layout.

A player draws an hour-long recording from these few hundred kilobytes instead of decoding the
whole file in the browser (wavesurfer.js#1001). The layout is audiowaveform's version 2 JSON
(``version``, ``channels``, ``sample_rate``, ``samples_per_pixel``, ``bits``, ``length``,
``data`` = ``[min0, max0, min1, max1, ...]``), which waveform-data.js (peaks.js) reads as it is
and whose ``data`` wavesurfer.js takes as pre-computed peaks.

One pass over the PCM in bounded chunks, vectorised with numpy, computes every resolution at
once; memory is one chunk plus the (small) peaks. Channels are folded into one: a pixel shows the
lowest and highest sample of any channel, so a quiet speaker on one channel of a call is never
averaged away by silence on the other. Values are 8-bit: each sample's most significant byte
(the sample divided by 2^(bits-8), rounded down), whatever the stored sample width.

Peaks are derived data: a function of the stored audio alone, so the audio's sha256 and the
resolution name them (strong ETag) and they live and die with the audio (keys from its key).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from tapevault.core.ports import Stat
from tapevault.core.wav import WavInfo

FORMAT_VERSION = 2
BITS = 8
# Fine enough to zoom into a few seconds, coarse enough that an hour of 16 kHz audio is ~3500
# pixels (~15 KB of JSON).
RESOLUTIONS = (256, 2048, 16384)
# The default resolution is the coarsest that still gives a player this many pixels.
MIN_PIXELS = 1000
# Frames read at once: a multiple of every resolution, so blocks rarely straddle chunks.
CHUNK_FRAMES = 1 << 16
_JSON_VALUES_PER_PIECE = 1 << 15


def peaks_key(storage_key: str, samples_per_pixel: int) -> str:
    """The object key of a recording's peaks at one resolution: next to its audio."""
    return f"{storage_key.removesuffix('.wav')}.peaks-{samples_per_pixel}.json"


def peaks_keys(storage_key: str) -> list[str]:
    """Every peaks key of a recording (what is removed with its audio)."""
    return [peaks_key(storage_key, spp) for spp in RESOLUTIONS]


def has_peaks(store: Stat, storage_key: str) -> bool:
    """Whether a recording's peaks are stored: the resolutions are written in order, so the
    last one present means all are (one stat, not one a resolution)."""
    return store.stat(peaks_key(storage_key, RESOLUTIONS[-1])) is not None


def pixels(frames: int, samples_per_pixel: int) -> int:
    """The ``length`` of the peaks of ``frames`` frames: the last block may be partial."""
    return -(-frames // samples_per_pixel)


def default_resolution(frames: int) -> int:
    """The coarsest resolution giving at least ``MIN_PIXELS`` pixels (the finest otherwise)."""
    for spp in sorted(RESOLUTIONS, reverse=True):
        if pixels(frames, spp) >= MIN_PIXELS:
            return spp
    return min(RESOLUTIONS)


@dataclass(frozen=True, slots=True)
class Peaks:
    """The peaks of one recording at one resolution."""

    sample_rate: int
    samples_per_pixel: int
    mins: npt.NDArray[np.int8]
    maxs: npt.NDArray[np.int8]

    @property
    def length(self) -> int:
        return len(self.mins)

    def json_chunks(self) -> Iterator[bytes]:
        """The audiowaveform JSON document, in pieces (a long recording's is megabytes)."""
        yield (
            f'{{"version":{FORMAT_VERSION},"channels":1,"sample_rate":{self.sample_rate},'
            f'"samples_per_pixel":{self.samples_per_pixel},"bits":{BITS},'
            f'"length":{self.length},"data":['
        ).encode()
        pairs = np.empty(2 * self.length, dtype=np.int8)
        pairs[0::2] = self.mins
        pairs[1::2] = self.maxs
        for start in range(0, len(pairs), _JSON_VALUES_PER_PIECE):
            piece = ",".join(map(str, pairs[start : start + _JSON_VALUES_PER_PIECE].tolist()))
            yield (piece if start == 0 else "," + piece).encode()
        yield b"]}"


class _Level:
    """Running min/max blocks of one resolution; ``carry`` holds a block not yet complete."""

    def __init__(self, samples_per_pixel: int) -> None:
        self.spp = samples_per_pixel
        self.mins: list[npt.NDArray[np.int8]] = []
        self.maxs: list[npt.NDArray[np.int8]] = []
        self.carry_min = np.empty(0, dtype=np.int8)
        self.carry_max = np.empty(0, dtype=np.int8)

    def add(self, lo: npt.NDArray[np.int8], hi: npt.NDArray[np.int8]) -> None:
        if len(self.carry_min):
            lo = np.concatenate((self.carry_min, lo))
            hi = np.concatenate((self.carry_max, hi))
        whole = len(lo) - len(lo) % self.spp
        if whole:
            self.mins.append(lo[:whole].reshape(-1, self.spp).min(axis=1))
            self.maxs.append(hi[:whole].reshape(-1, self.spp).max(axis=1))
        self.carry_min, self.carry_max = lo[whole:].copy(), hi[whole:].copy()

    def finish(self, sample_rate: int) -> Peaks:
        if len(self.carry_min):
            self.mins.append(self.carry_min.min(keepdims=True))
            self.maxs.append(self.carry_max.max(keepdims=True))
        empty = np.empty(0, dtype=np.int8)
        return Peaks(
            sample_rate=sample_rate,
            samples_per_pixel=self.spp,
            mins=np.concatenate(self.mins) if self.mins else empty,
            maxs=np.concatenate(self.maxs) if self.maxs else empty,
        )


def compute_peaks(
    f: BinaryIO, info: WavInfo, resolutions: tuple[int, ...] = RESOLUTIONS
) -> list[Peaks]:
    """The peaks of the WAV audio that ``info`` locates in ``f``, at every resolution."""
    fmt = info.fmt
    width = fmt.bits_per_sample // 8
    if width not in (1, 2, 3, 4) or fmt.channels < 1:
        raise ValueError(f"cannot compute peaks of {fmt.bits_per_sample}-bit audio")
    levels = [_Level(spp) for spp in resolutions]
    f.seek(info.data_offset)
    remaining = info.data_size - info.data_size % fmt.block_align
    while remaining > 0:
        data = f.read(min(remaining, CHUNK_FRAMES * fmt.block_align))
        if not data:
            break  # the file is shorter than its header says: peaks of what is there
        data = data[: len(data) - len(data) % fmt.block_align]
        remaining -= len(data)
        if width == 1:  # 8-bit WAV is unsigned, centred on 128
            top = (np.frombuffer(data, dtype=np.uint8).astype(np.int16) - 128).astype(np.int8)
        else:  # little-endian signed: the last byte of each sample is its top 8 bits
            top = np.frombuffer(data, dtype=np.int8)[width - 1 :: width]
        frames = top.reshape(-1, fmt.channels)
        lo = frames.min(axis=1) if fmt.channels > 1 else frames[:, 0]
        hi = frames.max(axis=1) if fmt.channels > 1 else frames[:, 0]
        for level in levels:
            level.add(lo, hi)
    return [level.finish(fmt.sample_rate) for level in levels]
