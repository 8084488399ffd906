"""Live streams in process, on SQLite and PostgreSQL: leases stamped and judged by the database's
clock, and a close that failed retried until the acknowledged audio is served."""

from __future__ import annotations

import asyncio
import errno
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, update

from tapevault.core.clock import FixedClock
from tapevault.core.model import Recording, RecordingStatus
from tapevault.db.schema import recordings
from tapevault.http.stream import StreamHub
from tapevault.ingest.durable import AckSink
from tapevault.ingest.recovery import recover_streams
from tapevault.runtime import Runtime, build_vault
from tests.conftest import START
from tests.support import live_recording


def status(runtime: Runtime, recording: Recording) -> RecordingStatus:
    current = runtime.repo.get_recording(recording.recording_id)
    assert current is not None
    return current.status


def test_recovery_honours_a_lease_whatever_the_servers_clocks(runtime: Runtime) -> None:
    """A server whose clock is 100 s ahead does not take a stream whose writer renewed its
    lease; the lease is stamped by the database's clock, and lapses by that clock only."""
    recording = live_recording(runtime, "server-a")
    ahead = build_vault(
        runtime.repo,
        runtime.vault.store,
        FixedClock(START + 100),
        "https://vault.test",
        runtime.vault.local,
    )
    assert recover_streams(ahead.ingest, "server-b") == 0
    assert status(runtime, recording) is RecordingStatus.RECEIVING
    stamped = runtime.repo.get_recording(recording.recording_id)
    assert stamped is not None and stamped.heartbeat_ms is not None
    # The database's time (this machine's), not the servers' Clock (START is months ahead).
    assert abs(stamped.heartbeat_ms - time.time() * 1000) < 60_000
    with runtime.engine.begin() as conn:  # the writer stopped renewing 61 s ago
        conn.execute(
            update(recordings)
            .where(recordings.c.recording_id == recording.recording_id)
            .values(heartbeat_ms=recordings.c.heartbeat_ms - 61_000)
        )
    runtime.repo.heartbeat("someone-else")  # renews only that writer's recordings
    assert recover_streams(ahead.ingest, "server-b") == 1
    taken = runtime.repo.get_recording(recording.recording_id)
    assert taken is not None and taken.status is RecordingStatus.PROCESSING and taken.recovered
    assert runtime.repo.pending_jobs(recording.recording_id)


def test_a_renewed_lease_is_not_taken(runtime: Runtime) -> None:
    """The writer's heartbeat renews the lease that recovery checks in the same statement."""
    recording = live_recording(runtime, "server-a")
    with runtime.engine.begin() as conn:
        conn.execute(
            update(recordings)
            .where(recordings.c.recording_id == recording.recording_id)
            .values(heartbeat_ms=recordings.c.heartbeat_ms - 61_000)
        )
    runtime.repo.heartbeat("server-a")
    assert recover_streams(runtime.vault.ingest, "server-b") == 0
    assert status(runtime, recording) is RecordingStatus.RECEIVING


class Acks(AckSink):
    def __init__(self) -> None:
        self.acked = 0

    def ack(self, upto: int) -> None:
        self.acked = upto


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("failing", ["UPDATE recordings", "INSERT INTO jobs"])
async def test_a_failed_close_is_retried_until_the_audio_is_served(
    runtime: Runtime, failing: str
) -> None:
    """The disk is full when a stream ends (the status change, or the finalization job, cannot
    be written): the process keeps the recording, retries, and once space is back the
    acknowledged audio is finalized, with no restart; recovery elsewhere never takes it."""
    hub = StreamHub(runtime.context)
    hub.close_retry_seconds = 0.01
    recording = live_recording(runtime, hub.writer_id)
    acks = Acks()
    stream = hub.start(recording, acks)
    stream.append(b"\x01\x00" * 32_000)
    hub.committer().dirty()

    full = True

    def disk_full(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if full and statement.startswith(failing):
            raise OSError(errno.ENOSPC, "No space left on device")

    event.listen(runtime.engine, "before_cursor_execute", disk_full)
    try:
        assert await hub.end(stream, recording) is None
        assert acks.acked == 64_000
        assert hub.unclosed == 1
        assert status(runtime, recording) is RecordingStatus.RECEIVING
        assert recover_streams(runtime.vault.ingest, "server-b") == 0  # still ours: the lease holds
        full = False  # space is back
        await until(lambda: hub.unclosed == 0)
    finally:
        event.remove(runtime.engine, "before_cursor_execute", disk_full)
    assert status(runtime, recording) is RecordingStatus.PROCESSING
    runtime.worker.run_until_idle()
    done = runtime.repo.get_recording(recording.recording_id)
    assert done is not None and done.status is RecordingStatus.AVAILABLE
    assert done.size_bytes == 44 + 64_000 and not done.recovered


async def test_the_lease_holds_while_a_close_copies_the_spool_into_the_store(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A close promotes the stream's spool into the object store, which can take a while on a
    slow store: the writer keeps renewing its lease meanwhile, so no other server takes the
    stream over (it could not, without the spool, finalize more than nothing)."""
    monkeypatch.setattr("tapevault.http.stream.HEARTBEAT_SECONDS", 0.02)
    hub = StreamHub(runtime.context)
    recording = live_recording(runtime, hub.writer_id)
    stream = hub.start(recording, Acks())
    stream.append(b"\x01\x00" * 1_000)
    hub.committer().dirty()
    local = runtime.vault.local
    promote = local.promote
    copying, done = threading.Event(), threading.Event()

    def slow_promote(*args: Any, **kwargs: Any) -> Any:
        copying.set()
        assert done.wait(10)
        return promote(*args, **kwargs)

    monkeypatch.setattr(local, "promote", slow_promote)
    ending = asyncio.ensure_future(hub.end(stream, recording))
    await until(copying.is_set)
    with runtime.engine.begin() as conn:  # as if the last renewal were 61 s old
        conn.execute(
            update(recordings)
            .where(recordings.c.recording_id == recording.recording_id)
            .values(heartbeat_ms=recordings.c.heartbeat_ms - 61_000)
        )
    stale = runtime.repo.get_recording(recording.recording_id)
    assert stale is not None and stale.heartbeat_ms is not None

    def renewed() -> bool:
        now = runtime.repo.get_recording(recording.recording_id)
        return now is not None and (now.heartbeat_ms or 0) > (stale.heartbeat_ms or 0)

    await until(renewed)
    assert recover_streams(runtime.vault.ingest, "server-b") == 0
    done.set()
    assert await ending is None
    assert status(runtime, recording) is RecordingStatus.PROCESSING
