"""The recording-URL endpoint's hot path with the access log on (issue 14): database-free
attempts on the event loop, and the audit writer's connection without a pre-ping."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tapevault import inline
from tapevault.config import Settings
from tapevault.core.audit import AuditEntry
from tapevault.core.clock import FixedClock
from tapevault.runtime import Runtime
from tests.dialects import customer


def test_a_database_free_attempt_takes_no_connection(runtime: Runtime) -> None:
    """Inside ``database_free`` both ways to the database (the fast reader, the engine's pool)
    refuse before taking a connection; outside, and on other threads, everything works."""
    repo = runtime.repo
    with inline.database_free():
        with pytest.raises(inline.NeedsDatabase):
            repo.get_tenant("nobody")
        if runtime.settings.is_sqlite:
            repo.engine.connect().close()  # SQLite keeps its plain pool: never attempted there
        else:
            with pytest.raises(inline.NeedsDatabase):
                repo.engine.connect()
            assert repo.engine.pool.checkedout() == 0  # nothing taken, nothing invalidated
    assert repo.get_tenant("nobody") is None
    with repo.engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_not_an_exception_a_verifier_could_swallow() -> None:
    """``NeedsDatabase`` passes through ``except Exception`` (a lookup failure turned into a
    401 would otherwise answer a request wrongly)."""
    assert not issubclass(inline.NeedsDatabase, Exception)


async def test_hot_calls_answer_from_memory_or_from_a_thread(
    runtime: Runtime, clock: FixedClock
) -> None:
    """``AppContext.hot`` returns the same answer whether memory held it (on the loop) or the
    database had to be asked (run again in a thread), on either engine."""
    ctx = runtime.context
    who = customer(runtime, clock)
    threads: list[bool] = []

    def lookup(partner_id: str) -> Any:
        threads.append(not inline._state.forbidden)
        return runtime.repo.get_tenant(partner_id)

    first = await ctx.hot(lookup, who.tenant.partner_id)
    assert first is not None and first.partner_id == who.tenant.partner_id
    if runtime.settings.is_sqlite:
        assert threads == [True]  # inline, as every metadata call on SQLite
    else:
        assert threads == [False, True]  # tried on the loop, then again in a thread
    assert await ctx.hot(lambda: 42) == 42  # no database needed: answered on the loop
    await asyncio.sleep(0)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_audit_writer_survives_a_dropped_connection(
    audited: Runtime, database_url: str
) -> None:
    """PostgreSQL: the writer's pool has no pre-ping, so a connection the server dropped fails
    the first statement; the write is made again on a fresh connection, once, and nothing is
    lost or doubled."""
    store = audited.audit_store
    entry = AuditEntry(at_ms=1, action="session.read", status=200, tenant_id="p1")
    store.write([entry])
    name = database_url.rsplit("/", 1)[1]
    admin = create_engine(database_url.rsplit("/", 1)[0] + "/postgres")
    try:
        with admin.begin() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
    finally:
        admin.dispose()
    store.write([entry])
    # Read through the writer's pool (renewed by the retry): the shared engine's pre-ping meets
    # its own dropped connections, which is not what this test is about.
    assert len(store.incoming(10)) == 2


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Webhook receivers on 127.0.0.1 allowed (the receiver fixture runs there)."""
    return Settings.load(
        {
            "data_dir": str(tmp_path / "data"),
            "database_url": database_url,
            "public_url": "https://vault.test",
            "webhook_allow_private": "on",
        },
        env={},
    )


async def test_webhook_dispatchers_sleep_without_endpoints(
    runtime: Runtime, client: Any, clock: FixedClock, receiver: Any
) -> None:
    """With no endpoint the dispatcher's threads make no query (they leased every second);
    an endpoint added moves the cache epoch, the change feed wakes them, and they lease."""
    webhooks = runtime.worker.webhooks
    assert webhooks is not None
    store = webhooks.store
    leases: list[int] = []
    real = store.lease_delivery

    def counted(owner: str, now_ms: int, lease_ms: int) -> Any:
        leases.append(1)
        return real(owner, now_ms, lease_ms)

    store.lease_delivery = counted  # type: ignore[method-assign]
    webhooks.poll_seconds = 0.02
    epoch = runtime.repo.cache_epoch()
    webhooks.start(2)
    try:
        await asyncio.sleep(0.3)
        assert leases == []
        who = customer(runtime, clock)
        created = await client.post(
            "/api/v1/webhooks", headers=who.bearer, json={"url": receiver.url("/hook/idle")}
        )
        assert created.status_code == 201, created.text
        assert runtime.repo.cache_epoch() > epoch  # what every process's change feed hears
        assert runtime.changes.check()  # this process's feed, as its thread would
        for _ in range(200):
            if leases:
                break
            await asyncio.sleep(0.01)
        assert leases
    finally:
        webhooks.stop()
