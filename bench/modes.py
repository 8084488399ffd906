"""How long and how big: ``--smoke`` (seconds, for the test suite), ``--quick`` (~2 min), full."""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class Mode:
    name: str
    seconds: int  # each measured wrk run
    warmup_seconds: int  # an unmeasured wrk run before each measured one (0: none)
    threads: int
    urls_connections: int
    range_connections: int
    seek_connections: int
    big_bytes: int  # audio data of the large recording
    range_bytes: int
    seek_bytes: int
    ttfb_samples: int  # per end of the file
    ttfb_bytes: int
    download_clients: int


FULL = Mode(
    name="full",
    seconds=30,
    warmup_seconds=5,
    threads=2,
    urls_connections=64,
    range_connections=4,
    seek_connections=32,
    big_bytes=1 * GiB,
    range_bytes=8 * MiB,
    seek_bytes=64 * KiB,
    ttfb_samples=200,
    ttfb_bytes=4 * KiB,
    download_clients=16,
)

QUICK = Mode(
    name="quick",
    seconds=15,
    warmup_seconds=2,
    threads=2,
    urls_connections=64,
    range_connections=4,
    seek_connections=32,
    big_bytes=256 * MiB,
    range_bytes=8 * MiB,
    seek_bytes=64 * KiB,
    ttfb_samples=50,
    ttfb_bytes=4 * KiB,
    download_clients=16,
)

# Checks that every scenario runs end to end; its figures mean nothing.
SMOKE = Mode(
    name="smoke",
    seconds=1,
    warmup_seconds=0,
    threads=1,
    urls_connections=1,
    range_connections=1,
    seek_connections=1,
    big_bytes=2 * MiB,
    range_bytes=256 * KiB,
    seek_bytes=64 * KiB,
    ttfb_samples=3,
    ttfb_bytes=4 * KiB,
    download_clients=4,
)

MODES = {m.name: m for m in (FULL, QUICK, SMOKE)}
