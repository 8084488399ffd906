"""The merged rendition of a session: its recordings mixed onto one timeline, as one WAV.

Kore.ai answers one ``<id>-merged.wav`` per call, holding the caller (inbound) and the agent
(outbound) recordings each at its own start time. :func:`merge_to_wav` builds it from stored
canonical WAVs: every input is downmixed to mono and brought to the highest input rate (the common
rate) by libswresample, spooled as raw int16 to a temporary file next to ``dst``, and the spools are
then summed block by block onto the timeline and saturated to int16. Memory stays at a few blocks
whatever the length of the call.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import numpy.typing as npt

from tapevault.core.wav import (
    CANONICAL_HEADER_SIZE,
    PcmFormat,
    WavInfo,
    canonical_header,
    parse_wav,
)
from tapevault.errors import InvalidAudio

Samples = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class MergeInput:
    """One stored recording and where it lands on the merged timeline."""

    path: Path  # a canonical PCM WAV
    start_ms: int  # where its first sample lands on the output timeline (>= 0)


@dataclass(frozen=True, slots=True)
class MergedAudio:
    """What :func:`merge_to_wav` wrote."""

    sample_rate: int
    channels: int  # always 1
    bits_per_sample: int  # always 16
    frames: int
    size: int  # bytes of the whole output file
    sha256: str  # hex digest of the whole output file


@dataclass(frozen=True, slots=True)
class _Track:
    """An input ready to mix: ``frames`` mono int16 samples at the common rate, stored in ``path``
    from byte ``offset`` on, that belong at output frame ``start``."""

    path: Path
    offset: int
    start: int
    frames: int


def sequential_starts(durations_ms: Sequence[int]) -> list[int]:
    """Start times that put segments of ``durations_ms`` back to back: ``[0, d0, d0+d1, ...]``."""
    starts: list[int] = []
    at = 0
    for duration in durations_ms:
        if duration < 0:
            raise ValueError(f"durations must be >= 0, not {duration}")
        starts.append(at)
        at += duration
    return starts


def merge_to_wav(inputs: Sequence[MergeInput], dst: Path, *, block_ms: int = 1000) -> MergedAudio:
    """Mix ``inputs`` into ``dst``: one mono 16-bit WAV at the highest input rate.

    Overlapping inputs are summed and saturated, gaps are silence, and the file ends where the
    last input ends. Raises ValueError for no inputs, a negative start or ``dst`` being an input,
    and lets the :class:`InvalidAudio` of an input that is not a canonical WAV through. On error
    every temporary file is removed, and so is ``dst`` if writing it had begun.
    """
    if not inputs:
        raise ValueError("nothing to merge: no inputs")
    if block_ms <= 0:
        raise ValueError(f"block_ms must be positive, not {block_ms}")
    for item in inputs:
        if item.start_ms < 0:
            raise ValueError(f"start_ms must be >= 0, not {item.start_ms} for {item.path.name}")
    if any(dst.resolve() == item.path.resolve() for item in inputs):
        raise ValueError(f"{dst.name} is one of the inputs; the merge would overwrite it")
    # Every header first: a bad input fails before any audio work, and the rate must be known.
    infos = [_read_info(item.path) for item in inputs]
    rate = max(info.fmt.sample_rate for info in infos)
    spools: list[Path] = []
    try:
        tracks = [
            _prepare(item, info, rate, block_ms, dst, spools)
            for item, info in zip(inputs, infos, strict=True)
            if info.frames
        ]
        return _mix(tracks, rate, max(1, rate * block_ms // 1000), dst)
    finally:
        for spool in spools:
            spool.unlink(missing_ok=True)


def _read_info(path: Path) -> WavInfo:
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            return parse_wav(f, size)
        except InvalidAudio:
            fmt = _header_only_format(f) if size == CANONICAL_HEADER_SIZE else None
            if fmt is None:
                raise
            return WavInfo(fmt=fmt, data_offset=CANONICAL_HEADER_SIZE, data_size=0)


def _header_only_format(f: BinaryIO) -> PcmFormat | None:
    """The format of a WAV that is a bare header, or None if ``f`` is not one.

    A stream that ended before its first sample is stored as just a header, which parse_wav
    refuses ("no audio samples"); parse the header followed by stand-in bytes (zeros, so no
    chunk header) that it takes as audio.
    """
    f.seek(0)
    padded = f.read() + bytes(8)
    try:
        return parse_wav(io.BytesIO(padded), len(padded)).fmt
    except InvalidAudio:
        return None


def _prepare(
    item: MergeInput, info: WavInfo, rate: int, block_ms: int, dst: Path, spools: list[Path]
) -> _Track:
    """The input as a track: read in place when it already is mono 16-bit at ``rate``, otherwise
    converted into a spool file next to ``dst`` (appended to ``spools`` for the caller to remove).
    """
    start = round(item.start_ms * rate / 1000)
    if info.fmt == PcmFormat(sample_rate=rate, channels=1, bits_per_sample=16):
        return _Track(item.path, info.data_offset, start, info.frames)
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".pcm")
    spools.append(Path(name))
    frames = 0
    with os.fdopen(fd, "wb") as out, item.path.open("rb") as src:
        blocks = _mono_blocks(src, info, max(1, info.fmt.sample_rate * block_ms // 1000))
        if info.fmt.sample_rate != rate:
            blocks = _resampled(blocks, info.fmt.sample_rate, rate)
        for block in blocks:
            out.write(block.astype("<i2", copy=False).tobytes())
            frames += len(block)
    return _Track(Path(name), 0, start, frames)


def _mono_blocks(src: BinaryIO, info: WavInfo, block: int) -> Iterator[Samples]:
    """The input's audio as mono int16, ``block`` frames at a time."""
    fmt = info.fmt
    src.seek(info.data_offset)
    for first in range(0, info.frames, block):
        count = min(block, info.frames - first)
        raw = _read_exact(src, count * fmt.block_align)
        if fmt.bits_per_sample == 8:  # unsigned, centred on 128
            samples = (np.frombuffer(raw, np.uint8).astype(np.int16) - 128) << 8
        elif fmt.bits_per_sample == 16:
            samples = np.frombuffer(raw, "<i2").astype(np.int16)
        else:  # 24-bit: the upper two bytes of each sample are its top 16 bits, sign included
            samples = np.frombuffer(raw, np.uint8).reshape(-1, 3)[:, 1:].copy().view("<i2")
            samples = samples.reshape(-1).astype(np.int16)
        if fmt.channels > 1:
            mean = samples.reshape(-1, fmt.channels).mean(axis=1)
            samples = np.rint(mean).astype(np.int16)
        yield samples


def _resampled(blocks: Iterator[Samples], src_rate: int, rate: int) -> Iterator[Samples]:
    """``blocks`` at ``src_rate`` converted to ``rate`` by libswresample; flushed at the end, as
    the filter holds back its last few milliseconds until it knows the input is over."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    for block in blocks:
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = src_rate
        for out in resampler.resample(frame):
            yield out.to_ndarray().reshape(-1).astype(np.int16, copy=False)
    for out in resampler.resample(None):
        yield out.to_ndarray().reshape(-1).astype(np.int16, copy=False)


def _mix(tracks: list[_Track], rate: int, block: int, dst: Path) -> MergedAudio:
    """Sum ``tracks`` onto the timeline, ``block`` output frames at a time, and write ``dst``."""
    total = max((t.start + t.frames for t in tracks), default=0)
    header = canonical_header(PcmFormat(rate, 1, 16), total * 2)
    digest = hashlib.sha256(header)
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(t.path.open("rb")) for t in tracks]
        try:
            with dst.open("wb") as out:
                out.write(header)
                for first in range(0, total, block):
                    end = min(first + block, total)
                    # int32 holds the sum of any realistic number of int16 tracks without wrapping.
                    acc = np.zeros(end - first, dtype=np.int32)
                    for track, src in zip(tracks, sources, strict=True):
                        lo, hi = max(first, track.start), min(end, track.start + track.frames)
                        if lo < hi:
                            src.seek(track.offset + (lo - track.start) * 2)
                            raw = _read_exact(src, (hi - lo) * 2)
                            acc[lo - first : hi - first] += np.frombuffer(raw, "<i2")
                    data = np.clip(acc, -32768, 32767).astype("<i2").tobytes()
                    digest.update(data)
                    out.write(data)
                size = out.tell()
        except BaseException:
            dst.unlink(missing_ok=True)  # never leave a half-written merge behind
            raise
    return MergedAudio(rate, 1, 16, total, size, digest.hexdigest())


def _read_exact(src: BinaryIO, size: int) -> bytes:
    data = src.read(size)
    if len(data) != size:
        raise InvalidAudio(f"audio ended early: {len(data)} of {size} bytes read")
    return data
