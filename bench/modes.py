"""How long and how big: ``--smoke`` (seconds, for the test suite), ``--quick``, full."""

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
    ingest_seconds: float  # each ingest level: how long every stream sends
    ingest_start: int  # the first level of the 20 ms search (100 ms starts at 20 ms's result)
    ingest_min: int  # the search goes no lower
    ingest_max: int  # nor higher (also bounded by the open-file limit)
    ingest_generators: int  # load generator processes
    finalize_seconds: int  # audio in the raw stream and WAV upload
    finalize_mp3_seconds: int
    finalize_repeats: int  # the median is reported


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
    ingest_seconds=20,
    ingest_start=200,
    ingest_min=25,
    ingest_max=8000,
    ingest_generators=2,
    finalize_seconds=3600,
    finalize_mp3_seconds=600,
    finalize_repeats=3,
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
    ingest_seconds=8,
    ingest_start=200,
    ingest_min=25,
    ingest_max=8000,
    ingest_generators=2,
    finalize_seconds=600,
    finalize_mp3_seconds=600,
    finalize_repeats=3,
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
    ingest_seconds=2,
    ingest_start=6,
    ingest_min=6,
    ingest_max=6,
    ingest_generators=2,
    finalize_seconds=10,
    finalize_mp3_seconds=5,
    finalize_repeats=1,
)

MODES = {m.name: m for m in (FULL, QUICK, SMOKE)}
