"""``GET /readyz``: the database, its schema and the store; cached, bounded, and revealing no
host, path or driver message (``tapevault.readiness``, ``tapevault.http.health.Ready``)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from sqlalchemy import text

from tapevault.readiness import (
    CHECKS,
    DATABASE_DOWN,
    OK,
    SCHEMA_BEHIND,
    STORE_DOWN,
    Readiness,
    probe_dependencies,
    stat_probe,
)
from tapevault.runtime import Runtime

ALL_OK = dict.fromkeys(CHECKS, OK)
SECRET = "postgresql://admin:hunter2@db.internal:5432 /srv/private"


class Store:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.stats = 0

    def stat(self, key: str) -> None:
        self.stats += 1
        if self.error is not None:
            raise self.error


async def test_ready_on_each_database(client: httpx.AsyncClient) -> None:
    """200 with every check ok; HEAD the same without a body; other methods 405."""
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": ALL_OK}
    assert ready.headers["cache-control"] == "private, no-store"
    head = await client.head("/readyz")
    assert head.status_code == 200 and head.content == b""
    assert (await client.post("/readyz")).status_code == 405


async def test_schema_behind_is_not_ready(client: httpx.AsyncClient, runtime: Runtime) -> None:
    """A database at another migration than this code's: 503 naming the migrations check."""
    with runtime.engine.begin() as db:
        db.execute(text("UPDATE alembic_version SET version_num = '0013'"))
    runtime.context.readiness.ttl = 0
    answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json() == {
        "status": "unavailable",
        "checks": {"database": OK, "migrations": SCHEMA_BEHIND, "store": OK},
    }


async def test_store_failure_is_not_ready(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's stat raising: 503 naming the store, and its message is not shown."""

    def broken(key: str) -> None:
        raise OSError(f"cannot reach {SECRET}")

    monkeypatch.setattr(runtime.vault.store, "stat", broken)
    runtime.context.readiness.ttl = 0
    answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"] == {"database": OK, "migrations": OK, "store": STORE_DOWN}
    assert "hunter2" not in answer.text and "internal" not in answer.text
    monkeypatch.undo()
    assert (await client.get("/readyz")).status_code == 200  # recovers by itself


async def test_a_local_store_whose_directory_is_gone_is_not_ready(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """An unmounted disk: a stat of a missing key would say "no such object", so the local
    store's directory itself is checked; back in place, ready again."""
    root = runtime.vault.store.root
    moved = root.with_name("audio-unmounted")
    root.rename(moved)
    runtime.context.readiness.ttl = 0
    try:
        answer = await client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"]["store"] == STORE_DOWN
        assert str(root) not in answer.text
    finally:
        moved.rename(root)
    assert (await client.get("/readyz")).status_code == 200


def test_database_failure_reveals_nothing() -> None:
    """A database that raises: both of its checks fail with a fixed reason, not its message."""

    def revision() -> str:
        raise RuntimeError(f"connection to {SECRET} refused")

    checks = probe_dependencies(revision, "0016", stat_probe(Store()))()
    assert checks == {"database": DATABASE_DOWN, "migrations": DATABASE_DOWN, "store": OK}
    assert "hunter2" not in str(checks)


async def test_answer_is_cached_for_the_ttl() -> None:
    """Within the TTL every probe is answered from the last check: a flood costs one."""
    now = [100.0]
    store = Store()
    readiness = Readiness(
        probe_dependencies(lambda: "0016", "0016", stat_probe(store)), CHECKS, clock=lambda: now[0]
    )
    for _ in range(50):
        assert (await readiness.answer()).ready
    assert store.stats == 1
    now[0] += 1.5
    await readiness.answer()
    assert store.stats == 2


async def test_a_hanging_check_times_out_without_piling_up_threads() -> None:
    """A database that stops answering: probes answer 503 after the timeout, and while the
    check hangs no second one is started; once it returns, the next probe checks again."""
    release = threading.Event()
    calls = []

    def probe() -> dict[str, str]:
        calls.append(1)
        release.wait(10)
        return dict(ALL_OK)

    readiness = Readiness(probe, CHECKS, ttl=0, timeout=0.05)
    answers = await asyncio.gather(*(readiness.answer() for _ in range(20)))
    assert not any(a.ready for a in answers)
    assert "did not finish within 0.05 s" in answers[0].checks["database"]
    assert not (await readiness.answer()).ready
    assert len(calls) == 1
    release.set()
    for _ in range(100):
        if (await readiness.answer()).ready:
            break
        await asyncio.sleep(0.02)
    assert (await readiness.answer()).ready


async def test_a_bug_in_a_check_is_not_ready_not_a_500() -> None:
    """A probe that raises something unexpected answers 'not ready' with a generic reason."""

    def probe() -> dict[str, str]:
        raise KeyError(SECRET)

    answer = await Readiness(probe, CHECKS).answer()
    assert not answer.ready and "hunter2" not in str(answer.checks)
