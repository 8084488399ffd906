"""A scrape: the text of ``/metrics``, from this process or from every server process.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``tapevault serve`` with several processes) the values
come from the per-process files there, summed by prometheus-client's ``MultiProcessCollector``;
before reading them a scrape drops the live-gauge files of processes that have exited
(``mark_process_dead``), so a killed process's streams stop counting as live while its counters
stay in the totals (a counter must never go down).

The job queue gauges are read from the database at scrape time, by one aggregate query in a
thread with a deadline. At most one such query runs at a time: while the database hangs, a
scrape answers at once without them and with ``tapevault_database_up 0``, never an error, and
scrapes do not pile threads up behind the stuck one.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
METRICS_DIR = "metrics"  # under the data directory: the processes' value files
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUERY_SECONDS = 2.0  # the longest a scrape waits for the database gauges
_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")

JobQueue = Callable[[], tuple[int, int | None]]


def multiprocess_dir() -> Path | None:
    """Where this process's values live when several processes serve, else None."""
    path = os.environ.get(MULTIPROC_VARIABLE) or os.environ.get(MULTIPROC_VARIABLE.lower())
    return Path(path) if path else None


def prepare_multiprocess_dir(path: Path) -> None:
    """Empty (or make) the directory and point prometheus-client at it, for the processes about
    to start: values of an earlier run must not be added to this one's."""
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.suffix == ".db" and entry.is_file():
            entry.unlink()
    os.environ[MULTIPROC_VARIABLE] = str(path)


def sweep_dead_processes(path: Path) -> int:
    """``mark_process_dead`` for every process that left live-gauge files and no longer runs."""
    swept = 0
    pids = set()
    for entry in os.listdir(path):
        match = _LIVE_FILE.fullmatch(entry)
        if match:
            pids.add(int(match.group(1)))
    for pid in pids:
        if not _alive(pid):
            mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
            swept += 1
    return swept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process has the pid now: not ours to judge
    return True


class DatabaseGauges:
    """The gauges a scrape reads from the database; see the module docstring."""

    def __init__(self, job_queue: JobQueue, *, deadline: float = QUERY_SECONDS) -> None:
        self.job_queue = job_queue
        self.deadline = deadline
        self._busy = threading.Lock()  # held while a query runs (possibly past its deadline)

    def read(self) -> tuple[int, int | None] | None:
        """The job queue, or None when the database did not answer in time (or failed)."""
        if not self._busy.acquire(blocking=False):
            return None  # the previous query is still stuck: do not start another
        result: list[tuple[int, int | None]] = []
        done = threading.Event()

        def query() -> None:
            try:
                result.append(self.job_queue())
            except Exception:  # noqa: S110 - an unreachable database is a gauge, not an error
                pass
            finally:
                self._busy.release()
                done.set()

        threading.Thread(target=query, name="tapevault-metrics-db", daemon=True).start()
        done.wait(self.deadline)
        return result[0] if result else None


class _Families:
    """A collector of families computed before the scrape (the database gauges)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class _Process:
    """This process's registry, as a collector of the scrape's registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def database_families(queue: tuple[int, int | None] | None, now_ms: int) -> list[Metric]:
    up = GaugeMetricFamily(
        "tapevault_database_up",
        "1 when the scrape could read the database gauges, 0 when the database did not answer "
        "(the job gauges are then absent).",
        value=0 if queue is None else 1,
    )
    if queue is None:
        return [up]
    count, oldest_ms = queue
    queued = GaugeMetricFamily(
        "tapevault_jobs_queued",
        "Finalization jobs not done yet (waiting, running or backing off before a retry).",
        value=count,
    )
    age = GaugeMetricFamily(
        "tapevault_jobs_oldest_age_seconds",
        "Age of the oldest job not done yet (0 when there is none).",
        value=0.0 if oldest_ms is None else max(0.0, (now_ms - oldest_ms) / 1000),
    )
    return [up, queued, age]


def render(database: DatabaseGauges | None) -> bytes:
    """The whole exposition, in the Prometheus text format. Blocking (files, the database):
    call it from a thread."""
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess_dir()
    source: Collector
    if directory is not None:
        sweep_dead_processes(directory)
        source = MultiProcessCollector(None, str(directory))  # type: ignore[no-untyped-call]
    else:
        source = _Process()
    registry.register(source)
    if database is not None:
        families = database_families(database.read(), int(time.time() * 1000))
        registry.register(_Families(families))
    return generate_latest(registry)
