"""Finalization throughput: seconds of audio made final per second of wall time.

What the worker does after a stream closes or an upload is accepted (``ingest/finalize.py``):
convert the source into a canonical WAV in a node-local temporary file (not fsynced: the store's
copy is what must be durable), then copy that file into the object store (``LocalStore.put``: a
temporary file, fsync, rename, directory fsync). Three sources, all 16 kHz mono 16-bit audio
written just before (so read from the page cache, as a just-received recording would be):

* a live stream's raw ``pcm_s16le`` file through ``pcm.raw_to_wav``;
* a WAV upload through ``formats.decode`` (the bit-exact copy path, no FFmpeg);
* an MP3 upload (made with the ``ffmpeg`` CLI, 64 kbit/s, when ffmpeg is installed) through
  ``formats.decode`` (PyAV decoding).

The reference is the I/O floor for the same output: one fsynced copy of the finished WAV
(``shutil.copyfileobj`` in 1 MiB chunks + fsync), timed the same way; for the MP3 it is the
``ffmpeg`` CLI decoding the same file to WAV (without fsync).
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tapevault.core.wav import PcmFormat, canonical_header
from tapevault.ingest import formats
from tapevault.ingest.pcm import raw_to_wav
from tapevault.storage.local import LocalStore
from tapevault.storage.node_local import read_chunks

RATE = 16_000
FMT = PcmFormat(sample_rate=RATE, channels=1, bits_per_sample=16)


def _tone_second() -> bytes:
    """One second of a 440 Hz tone with a little deterministic noise (so MP3 has work to do)."""
    out = bytearray()
    noise = 12345
    for i in range(RATE):
        noise = (noise * 1103515245 + 12345) & 0x7FFFFFFF
        sample = int(6000 * math.sin(2 * math.pi * 440 * i / RATE)) + (noise % 512) - 256
        out += sample.to_bytes(2, "little", signed=True)
    return bytes(out)


def write_raw(path: Path, seconds: int) -> int:
    second = _tone_second()
    with path.open("wb") as f:
        for _ in range(seconds):
            f.write(second)
    return seconds * len(second)


def write_wav(path: Path, raw: Path, size: int) -> None:
    with path.open("wb") as out, raw.open("rb") as inp:
        out.write(canonical_header(FMT, size))
        shutil.copyfileobj(inp, out, 1 << 20)


def write_mp3(ffmpeg: str, path: Path, raw: Path, seconds: int) -> None:
    source = ["-f", "s16le", "-ar", str(RATE), "-ac", "1", "-t", str(seconds), "-i", str(raw)]
    encode = ["-c:a", "libmp3lame", "-b:a", "64k", str(path)]
    subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-y", *source, *encode], check=True, timeout=600
    )


def _fsynced_copy(src: Path, dst: Path) -> None:
    with src.open("rb") as inp, dst.open("wb") as out:
        shutil.copyfileobj(inp, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the ffmpeg CLI)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed(repeats: int, once: Callable[[], None]) -> dict[str, float]:
    """Median wall and CPU seconds of ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = _cpu(), time.perf_counter()
        once()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


class Finalization:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.store = LocalStore(work / "store")
        self.n = 0

    def worker(self, convert: Callable[[Path, Path], object], src: Path) -> Callable[[], None]:
        """What ``Finalizer._finalize`` does with a source: convert, then put in the store."""

        def once() -> None:
            self.n += 1
            tmp = src.parent / f".final-{self.n}.wav"
            try:
                convert(src, tmp)
                self.store.put(f"bench/{self.n}.wav", read_chunks(tmp))
            finally:
                tmp.unlink(missing_ok=True)
            self.store.delete(f"bench/{self.n}.wav")

        return once

    def copy_floor(self, produce: Callable[[Path, Path], object], src: Path) -> Callable[[], None]:
        """One fsynced copy of the WAV ``produce`` makes from ``src`` (made once, untimed)."""
        made = self.work / "floor-source.wav"
        produce(src, made)

        def once() -> None:
            out = self.work / "floor-copy.wav"
            _fsynced_copy(made, out)
            out.unlink()

        return once


def run(
    work: Path, seconds: int, mp3_seconds: int, repeats: int, ffmpeg: str | None
) -> dict[str, Any]:
    """Time every source; returns ``{name: {audio_s, wall_s, cpu_s, ref_wall_s, ...}}``."""
    work.mkdir(parents=True, exist_ok=True)
    bench = Finalization(work)
    raw = work / "stream.raw"
    size = write_raw(raw, seconds)
    wav = work / "upload.wav"
    write_wav(wav, raw, size)

    def stream(src: Path, dst: Path) -> object:
        return raw_to_wav(src, dst, encoding="pcm_s16le", sample_rate=RATE, channels=1)

    cases: dict[str, dict[str, Any]] = {}
    for name, convert, src, audio_s in (
        ("stream_raw", stream, raw, seconds),
        ("wav_upload", formats.decode, wav, seconds),
    ):
        figures = _timed(repeats, bench.worker(convert, src))
        reference = _timed(repeats, bench.copy_floor(convert, src))
        cases[name] = {
            "audio_s": audio_s,
            "bytes": src.stat().st_size,
            **figures,
            "ref_wall_s": reference["wall_s"],
            "ref_cpu_s": reference["cpu_s"],
        }
    if ffmpeg is not None:
        mp3 = work / "upload.mp3"
        write_mp3(ffmpeg, mp3, raw, mp3_seconds)
        figures = _timed(repeats, bench.worker(formats.decode, mp3))

        def cli() -> None:
            out = work / "ffmpeg-out.wav"
            subprocess.run(
                [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(mp3), str(out)],
                check=True,
                timeout=600,
            )
            out.unlink()

        reference = _timed(repeats, cli)
        cases["mp3_upload"] = {
            "audio_s": mp3_seconds,
            "bytes": mp3.stat().st_size,
            **figures,
            "ref_wall_s": reference["wall_s"],
            "ref_cpu_s": reference["cpu_s"],
        }
    shutil.rmtree(work, ignore_errors=True)
    return cases
