"""Periodic tasks shared by several nodes (the retention purge, the access log's pruning) run on
one node at a time: a lease by the database's clock, renewed by its holder, taken over once it
lapses. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update

from tapevault.audio_gen import tone_wav_bytes
from tapevault.core.access import Action, MemoryAccessLog
from tapevault.core.clock import FixedClock
from tapevault.core.model import RecordingStatus, SessionKind
from tapevault.db.schema import task_leases
from tapevault.ingest.housekeeping import Housekeeping
from tapevault.runtime import Runtime


def lapse(runtime: Runtime, name: str) -> None:
    """Move a task's lease back past its end, as if its holder had been dead that long."""
    with runtime.repo.engine.begin() as conn:
        conn.execute(
            update(task_leases)
            .where(task_leases.c.name == name)
            .values(expires_ms=task_leases.c.expires_ms - 10**9)
        )


def test_one_holder_at_a_time_renewed_then_taken_over(runtime: Runtime) -> None:
    repo = runtime.repo
    assert repo.claim_task("purge", "node-a", 60_000)
    assert not repo.claim_task("purge", "node-b", 60_000)
    assert repo.claim_task("purge", "node-a", 60_000)  # its holder renews it
    assert repo.claim_task("audit-prune", "node-b", 60_000)  # another task, another lease
    lapse(runtime, "purge")
    assert repo.claim_task("purge", "node-b", 60_000)
    assert not repo.claim_task("purge", "node-a", 60_000)


def test_two_nodes_never_purge_the_same_recordings(
    runtime: Runtime, clock: FixedClock, access_log: MemoryAccessLog, tmp_path: Path
) -> None:
    """Node A's housekeeping holds the purge: B's, with recordings due, leaves them to A, and
    each recording is purged (and logged) once; when A's lease lapses, B purges."""
    vault = runtime.vault
    tenant = vault.tenants.create("clinic", 60).tenant
    nodes = [
        Housekeeping(
            runtime.context.retention,
            runtime.audit_store,
            clock,
            purge_seconds=60,
            audit_retention_seconds=10**9,
            claim=lambda task, seconds, me=me: runtime.repo.claim_task(  # type: ignore[misc]
                task, me, int(seconds * 1000)
            ),
        )
        for me in ("node-a", "node-b")
    ]
    a, b = nodes
    a.run_due()  # A takes the purge (nothing is due yet)

    def expired_recording(n: int) -> str:
        session = vault.sessions.create_session(tenant, SessionKind.AMBIENT)
        spooled = tmp_path / f"{n}.part"
        spooled.write_bytes(tone_wav_bytes(0.2))
        recording = vault.ingest.accept_upload(tenant, session.session_id, spooled, "wav/pcm_s16le")
        runtime.worker.run_until_idle()
        return recording.recording_id

    first = expired_recording(1)
    clock.advance(120)  # past the tenant's retention
    b.run_due()
    assert status(runtime, first) is RecordingStatus.AVAILABLE  # B left it to A
    a._next_purge = 0.0  # A's next interval
    a.run_due()
    assert status(runtime, first) is RecordingStatus.EXPIRED
    second = expired_recording(2)
    clock.advance(120)
    lapse(runtime, "purge")  # A died
    b._next_purge = 0.0
    b.run_due()
    assert status(runtime, second) is RecordingStatus.EXPIRED
    purges = [e.recording_id for e in access_log.events if e.action is Action.RETENTION_PURGE]
    assert purges == [first, second]


def status(runtime: Runtime, recording_id: str) -> RecordingStatus:
    recording = runtime.repo.get_recording(recording_id)
    assert recording is not None
    return recording.status
