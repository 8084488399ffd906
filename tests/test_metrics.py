"""Metrics in process: route labels stay bounded, a scrape survives a database outage, the
access-log writer and the retention service count through their ports, dead processes' live
gauges are dropped. (Two real processes: test_metrics_server.py.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tapevault.config import Settings
from tapevault.core.access import AccessEvent, Action, Actor, MemoryAccessLog
from tapevault.core.auditlog import AuditLog
from tapevault.core.clock import FixedClock
from tapevault.errors import ConfigError, StorageError
from tapevault.observe import exposition
from tapevault.observe.exposition import DatabaseGauges, database_families
from tapevault.runtime import Runtime
from tapevault.storage.local import LocalStore
from tapevault.storage.timed import TimedStore
from tests.dialects import customer
from tests.support import database_gone, wait_for

DURATION = "http_server_request_duration_seconds"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def routes(text: str) -> set[str]:
    return {
        dict(labels)["http_route"]
        for name, labels in samples(text)
        if name.startswith(DURATION) and "http_route" in dict(labels)
    }


async def test_route_labels_are_templates_whatever_the_paths(
    runtime: Runtime, client: httpx.AsyncClient, clock: FixedClock
) -> None:
    """Random paths, ids and methods add no series: templates, ``unmatched``, ``_OTHER``."""
    admin = customer(runtime, clock)
    for i in range(30):
        await client.get(f"/random/{i}/x{i}")
        await client.get(f"/media/{i}abc.wav?s=x")
        await client.get(f"/api/v1/sessions/s{i}", headers=admin.bearer)
    await client.request("BREW", "/metrics")
    text = (await client.get("/metrics", headers=admin.bearer)).text
    found = routes(text)
    assert "unmatched" in found
    assert "/media/{recording_id}.wav" in found
    assert "/api/v1/sessions/{session_id}" in found
    # (The registry is the process's: other tests' routes may be there too, never a raw path.)
    assert not any("random" in r or "abc" in r or "/s1" in r for r in found), found
    methods = {
        dict(labels)["http_request_method"] for name, labels in samples(text) if DURATION in name
    }
    assert "_OTHER" in methods and "BREW" not in methods


async def test_metrics_refuse_without_an_admin_key(
    runtime: Runtime, client: httpx.AsyncClient, clock: FixedClock, access_log: MemoryAccessLog
) -> None:
    """401 without a key, 403 with a member's, 405 for POST, each access-logged; a
    scrape itself is not."""
    admin = customer(runtime, clock)
    assert (await client.get("/metrics")).status_code == 401
    member = await client.post(
        f"/v1/{admin.ws}/api-keys", headers=admin.bearer, json={"role": "member"}
    )
    key = member.json()["api_key"]
    denied = await client.get("/metrics", headers={"authorization": f"Bearer {key}"})
    assert denied.status_code == 403
    assert (await client.post("/metrics", headers=admin.bearer)).status_code == 405
    head = await client.head("/metrics", headers=admin.bearer)
    assert head.status_code == 200 and head.content == b""
    assert [e.status for e in access_log.events if e.action is Action.AUTH_FAILURE] == [401]
    refused = [e for e in access_log.events if e.action is Action.METRICS_READ]
    assert [e.status for e in refused] == [403, 405]


async def test_a_scrape_answers_through_a_database_outage(
    runtime: Runtime, client: httpx.AsyncClient, clock: FixedClock, database_url: str
) -> None:
    """Database down: an admin key seen before still scrapes, with ``tapevault_database_up 0``
    and no job gauges; an unknown key gets 503 (never a 500); back up, the gauges return."""
    admin = customer(runtime, clock)
    first = samples((await client.get("/metrics", headers=admin.bearer)).text)
    assert first[("tapevault_database_up", ())] == 1
    assert ("tapevault_jobs_queued", ()) in first
    with database_gone(runtime, database_url):
        down = await client.get("/metrics", headers=admin.bearer)
        assert down.status_code == 200, down.text
        during = samples(down.text)
        assert during[("tapevault_database_up", ())] == 0
        assert ("tapevault_jobs_queued", ()) not in during
        stranger = await client.get("/metrics", headers={"authorization": "Bearer tv_unknown"})
        assert stranger.status_code == 503
    again = samples((await client.get("/metrics", headers=admin.bearer)).text)
    assert again[("tapevault_database_up", ())] == 1


def test_a_stuck_database_query_is_not_waited_for_nor_repeated() -> None:
    """A query that hangs: the scrape returns at its deadline, and the next scrape starts no
    second query while the first is stuck (threads do not pile up)."""
    release = threading.Event()
    calls = []

    def stuck() -> tuple[int, int | None]:
        calls.append(1)
        release.wait(10)
        return 0, None

    gauges = DatabaseGauges(stuck, deadline=0.2)
    start = time.monotonic()
    assert gauges.read() is None
    assert gauges.read() is None
    assert time.monotonic() - start < 2 and len(calls) == 1
    release.set()
    time.sleep(0.1)

    def failing() -> tuple[int, int | None]:
        raise OSError("connection refused")

    assert DatabaseGauges(failing).read() is None
    names = [f.name for f in database_families(None, 0)]
    assert names == ["tapevault_database_up"]


def test_dead_processes_lose_their_live_gauges_and_keep_their_counters(tmp_path: Path) -> None:
    """``sweep_dead_processes``: files of a pid that no longer runs, live gauges only."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        names = [
            f"gauge_livesum_{dead.pid}.db",
            f"gauge_livemax_{dead.pid}.db",
            f"counter_{dead.pid}.db",
            f"gauge_livesum_{alive.pid}.db",
        ]
        for name in names:
            (tmp_path / name).write_bytes(b"")
        assert exposition.sweep_dead_processes(tmp_path) == 1
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([f"counter_{dead.pid}.db", f"gauge_livesum_{alive.pid}.db"])
    finally:
        alive.kill()
        alive.wait()


def test_prepare_empties_the_directory_of_an_earlier_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve`` starts from an empty directory (its own files only) and points the processes
    at it."""
    monkeypatch.delenv(exposition.MULTIPROC_VARIABLE, raising=False)
    (tmp_path / "counter_1.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("not ours")
    exposition.prepare_multiprocess_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert exposition.multiprocess_dir() == tmp_path


class Cycles:
    def __init__(self) -> None:
        self.seen: list[tuple[int, float, bool]] = []

    def cycle(self, *, queued: int, lag_seconds: float, failed: bool) -> None:
        self.seen.append((queued, lag_seconds, failed))


def test_the_access_log_writer_reports_failures_and_lag(
    audited: Runtime, clock: FixedClock
) -> None:
    """A failing store: the cycle is counted failed, the kept record's age is the lag; once
    the store works again the record goes in (its lag told) and the lag falls back to 0."""
    log = audited.audit
    assert isinstance(log, AuditLog)
    cycles = Cycles()
    log.counts = cycles
    original = log.store.write

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk gone")

    log.store.write = broken  # type: ignore[method-assign]
    event = AccessEvent(
        action=Action.SESSION_READ,
        actor=Actor(kind="api_key", partner_id="p"),
        status=200,
        at_ms=int(clock.now() * 1000) - 7000,  # queued seven seconds ago
    )
    log.record(event)  # the writer thread takes it, and fails
    wait_for(lambda: any(c[2] for c in cycles.seen), 10, "a failed cycle")
    queued, lag, _ = next(c for c in cycles.seen if c[2])
    assert queued >= 1 and lag >= 7
    log.store.write = original  # type: ignore[method-assign]
    # The kept record goes in seven seconds late (its lag told), then idle cycles tell 0.
    wait_for(lambda: cycles.seen[-1] == (0, 0.0, False), 10, "an idle cycle after the retry")
    assert any(not failed and lag >= 7 for _, lag, failed in cycles.seen)


async def test_a_timed_store_times_each_operation_once(tmp_path: Path) -> None:
    """put, stat, delete, local_copy once each; a read once, at its first chunk, however many
    chunks follow; a read that fails is timed too, and closing reaches the store's reader."""
    seen: list[str] = []
    store = TimedStore(LocalStore(tmp_path), lambda operation, seconds: seen.append(operation))
    store.put("a", [b"x" * 5000])
    assert store.stat("a") is not None
    with store.local_copy("a") as path:
        assert path.read_bytes() == b"x" * 5000
    chunks = [c async for c in store.read_range("a", 10, 4000, 1000)]
    assert b"".join(chunks) == b"x" * 4000 and len(chunks) == 4
    reader = store.read_range("a", 0, 5000, 100)
    assert await reader.__anext__() == b"x" * 100
    await reader.aclose()  # type: ignore[attr-defined]
    with pytest.raises(StorageError):
        [c async for c in store.read_range("missing", 0, 1)]
    assert store.delete("a")
    assert seen == ["put", "stat", "local_copy", "read_range", "read_range", "read_range", "delete"]


async def test_concurrent_scrapes_share_one_build(
    runtime: Runtime, client: httpx.AsyncClient, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten scrapes at once: one build of the text (in a thread), ten identical answers; a
    build that fails is a 503 with a reason, and the next scrape builds afresh."""
    from tapevault.http import metrics as endpoint

    admin = customer(runtime, clock)
    builds = []

    def slow(database: object) -> bytes:
        builds.append(1)
        time.sleep(0.3)
        return b"# one build\n"

    monkeypatch.setattr(endpoint, "render", slow)
    answers = await asyncio.gather(
        *(client.get("/metrics", headers=admin.bearer) for _ in range(10))
    )
    assert [a.status_code for a in answers] == [200] * 10
    assert {a.text for a in answers} == {"# one build\n"} and len(builds) == 1

    def broken(database: object) -> bytes:
        raise OSError("unreadable metrics file")

    monkeypatch.setattr(endpoint, "render", broken)
    failed = await client.get("/metrics", headers=admin.bearer)
    assert failed.status_code == 503 and "could not be collected" in failed.json()["message"]
    monkeypatch.setattr(endpoint, "render", slow)
    assert (await client.get("/metrics", headers=admin.bearer)).status_code == 200


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("metrics.internal:9100", ("metrics.internal", 9100)),
        ("", None),
    ],
)
def test_the_metrics_listen_setting(text: str, parsed: tuple[str, int] | None) -> None:
    """host:port, [v6]:port or a name; unset is no listener; it survives ``environment()``."""
    settings = Settings.load({"metrics_listen": text or None}, env={})
    assert settings.metrics_listen == parsed
    again = Settings.load(env=settings.environment())
    assert again.metrics_listen == parsed


@pytest.mark.parametrize("text", ["9464", "host:", ":9464", "h:0", "h:65536", "h:12a", "a b:1"])
def test_a_bad_metrics_listen_stops_start_up(text: str) -> None:
    """Anything else is refused at start-up, naming the variable."""
    with pytest.raises(ConfigError, match="TAPEVAULT_METRICS_LISTEN"):
        Settings.load({"metrics_listen": text}, env={})
