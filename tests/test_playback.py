"""The playback fold (core/playback.py) on its own: which requests share one record, and that
no response is admitted before its playback's pending record is durable."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.auditlog import AuditLog, Pending, Query
from tapevault.core.clock import FixedClock
from tapevault.core.playback import Playbacks
from tapevault.db.auditstore import SqlAuditStore
from tapevault.db.engine import make_engine, migrate
from tapevault.errors import Unavailable
from tests.support import until


class SlowAudit:
    """An audit log whose pending writes finish only when the test says so."""

    def __init__(self) -> None:
        self.folder: Any = None
        self.healthy = True
        self.opened: list[Pending] = []
        self.release = asyncio.Event()
        self.fail = False

    async def open_pending(self, pending: Pending) -> None:
        self.opened.append(pending)
        await self.release.wait()
        if self.fail:
            raise Unavailable("The access log cannot be written; nothing was served.")


def first_request() -> AccessEvent:
    actor = Actor(partner_id="p", kind="signed_url", client_ip="10.0.0.1", user_agent="Chrome")
    return AccessEvent(Action.MEDIA_PLAYBACK, actor, 206, 0, recording_id="r1")


def fold(audit: SlowAudit) -> Playbacks:
    return Playbacks(cast(AuditLog, audit), FixedClock(1_000.0), "process-1")


async def test_concurrent_first_requests_share_one_playback() -> None:
    """Two requests of one player that arrive together are one playback: the second waits for
    the first's pending record instead of opening its own, and neither starts before it."""
    audit = SlowAudit()
    playbacks = fold(audit)
    first = asyncio.create_task(playbacks.admit("player", first_request))
    second = asyncio.create_task(playbacks.admit("player", first_request))
    await until(lambda: audit.opened, what="the first request's pending write")
    assert not first.done() and not second.done()  # nothing admitted before the write
    assert len(audit.opened) == 1
    audit.release.set()
    assert await first == await second == audit.opened[0].playback_id
    playbacks.served(await first, 206, [(0, 99)], 100)
    playbacks.served(await second, 206, [(100, 199)], 100)
    updated, sealed = playbacks.due(2_000_000, final=True)
    assert updated == [] and len(sealed) == 1
    (playback_id, entry) = sealed[0]
    assert playback_id == await first
    assert entry.bytes_sent == 200 and entry.ranges == ((0, 199),)
    assert entry.detail is not None and entry.detail["requests"] == 2


async def test_a_waiting_request_fails_over_when_the_first_cannot_open() -> None:
    """When the first request's pending write fails, a request waiting on it tries to open the
    playback itself (and fails the same way while the log is down): nothing is served."""
    audit = SlowAudit()
    audit.fail = True
    playbacks = fold(audit)
    first = asyncio.create_task(playbacks.admit("player", first_request))
    second = asyncio.create_task(playbacks.admit("player", first_request))
    await until(lambda: audit.opened, what="the first request's pending write")
    audit.release.set()
    for task in (first, second):
        with pytest.raises(Unavailable):
            await task
    assert len(audit.opened) == 2  # the waiting one tried on its own
    assert playbacks.due(2_000_000, final=True) == ([], [])  # no record of what never started


async def test_a_waiting_request_that_is_cancelled_does_not_keep_the_playback_open() -> None:
    """A joining request cancelled while it waits (its client left) is not counted as a
    response in flight, so the playback still goes idle and is sealed."""
    audit = SlowAudit()
    playbacks = Playbacks(cast(AuditLog, audit), FixedClock(1_000.0), "p", idle_seconds=2)
    first = asyncio.create_task(playbacks.admit("player", first_request))
    second = asyncio.create_task(playbacks.admit("player", first_request))
    await until(lambda: audit.opened, what="the first request's pending write")
    second.cancel()
    await asyncio.sleep(0)  # let the cancellation reach the waiting request
    audit.release.set()
    playback_id = await first
    with pytest.raises(asyncio.CancelledError):
        await second
    playbacks.served(playback_id, 206, [(0, 9)], 10)
    _, sealed = playbacks.due(1_000_000 + 5_000, final=False)  # 5 s later: idle
    assert [s[0] for s in sealed] == [playback_id]


async def test_a_playback_sealed_after_a_crash_counts_what_was_sent_up_to_its_last_tick(
    tmp_path: Path,
) -> None:
    """A process that dies while a long response streams leaves a pending record that already
    counts the finished response and the streaming one's bytes up to the last writer tick; the
    next start seals it marked `recovered` and `interrupted` (a lower bound)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate(engine)
    store = SqlAuditStore(engine)
    clock = FixedClock(1_000.0)
    audit = AuditLog(store, clock, None)
    playbacks = Playbacks(audit, clock, "gone-host:1:1")
    first = await playbacks.admit("player", first_request)
    done = playbacks.sending(first)
    assert done is not None
    done.sent(100, 0, 100)
    playbacks.served(first, 206, [(0, 99)], 100, done)
    second = await playbacks.admit("player", first_request)  # joins the same playback
    streaming = playbacks.sending(second)
    assert streaming is not None
    for i in range(3):  # three 1 MiB chunks of a long response leave, then the process dies
        streaming.sent(1 << 20, 1000 + i * (1 << 20), 1 << 20)
    clock.advance(2)
    audit.flush()  # one writer tick refreshes the pending record
    audit.folder = None  # the crash: nothing of this process is written any more
    audit.close()
    after = AuditLog(store, clock, None)
    assert after.recover_pending(lambda owner: True, stale_ms=10**9) == 1
    assert after.integrator.settle(10)  # sealed (durable), then integrated
    (record,) = store.query(Query(tenant_id="p", action=Action.MEDIA_PLAYBACK.value))
    entry = record.entry
    assert entry.bytes_sent == 100 + 3 * (1 << 20)
    assert entry.ranges == ((0, 99), (1000, 1000 + 3 * (1 << 20) - 1))
    assert entry.detail is not None
    assert entry.detail["recovered"] is True and entry.detail["interrupted"] is True
    assert entry.detail["in_flight"] == 1 and entry.detail["requests"] == 1
    engine.dispose()


async def test_a_response_that_fails_mid_way_still_counts_what_it_sent() -> None:
    """A response abandoned after some chunks (an error mid-body) adds the bytes it sent."""
    audit = SlowAudit()
    audit.release.set()
    playbacks = fold(audit)
    playback_id = await playbacks.admit("player", first_request)
    sending = playbacks.sending(playback_id)
    assert sending is not None
    sending.sent(4096, 0, 4096)
    playbacks.abandon(playback_id, sending)
    _, sealed = playbacks.due(2_000_000, final=True)
    (_, entry) = sealed[0]
    assert entry.bytes_sent == 4096 and entry.ranges == ((0, 4095),)
