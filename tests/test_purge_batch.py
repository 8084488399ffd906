"""The retention purge in batches: a batch's purge records are made durable in one append before
any of its recordings is erased, its tombstones are written in one transaction, and what changed
meanwhile (a hold, another purger) takes the one-at-a-time path. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tapevault.audio_gen import tone_wav_bytes
from tapevault.cli_compliance import cli_actor
from tapevault.core.access import AccessEvent, Action, MemoryAccessLog
from tapevault.core.audit import AuditEntry
from tapevault.core.clock import FixedClock
from tapevault.core.model import Recording, RecordingStatus, SessionKind, Tenant
from tapevault.core.retention import SHARED_WRITER_PACE, PurgePace, Retention
from tapevault.db.repository import tombstone_statement
from tapevault.db.schema import webhook_events
from tapevault.errors import Unavailable
from tapevault.runtime import Runtime

EXPIRED, AVAILABLE = RecordingStatus.EXPIRED, RecordingStatus.AVAILABLE


def expired_sessions(
    runtime: Runtime, clock: FixedClock, tmp_path: Path, sessions: int, each: int
) -> tuple[Tenant, list[list[str]]]:
    """``sessions`` sessions of ``each`` recordings, all past the tenant's retention (60 s):
    (the tenant, each session's recording ids)."""
    vault = runtime.vault
    tenant = vault.tenants.create("clinic", 60).tenant
    made: list[list[str]] = []
    for s in range(sessions):
        session = vault.sessions.create_session(tenant, SessionKind.AMBIENT)
        ids = []
        for n in range(each):
            spooled = tmp_path / f"{s}-{n}.part"
            spooled.write_bytes(tone_wav_bytes(0.1))
            ids.append(
                vault.ingest.accept_upload(
                    tenant, session.session_id, spooled, "wav/pcm_s16le"
                ).recording_id
            )
        made.append(ids)
    runtime.worker.run_until_idle()
    clock.advance(120)
    return tenant, made


def recording(runtime: Runtime, recording_id: str) -> Recording:
    found = runtime.repo.get_recording(recording_id)
    assert found is not None
    return found


def statuses(runtime: Runtime, ids: Sequence[str]) -> list[RecordingStatus]:
    return [recording(runtime, r).status for r in ids]


def stored(runtime: Runtime, recording_id: str) -> bool:
    return runtime.vault.store.stat(recording(runtime, recording_id).storage_key) is not None


def purge_records(access_log: MemoryAccessLog) -> Counter[str | None]:
    return Counter(e.recording_id for e in access_log.events if e.action is Action.RETENTION_PURGE)


AT_MS = 1_800_000_000_000


def event(n: int) -> AccessEvent:
    return AccessEvent(action=Action.AUDIT_READ, actor=cli_actor(), status=200, at_ms=AT_MS + n)


def test_commit_many_is_one_append_and_fails_closed(
    audited: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The durable log writes a batch with one store write; if that write fails, the whole
    batch is refused (``Unavailable``) and nothing of it is written."""
    audit, store = audited.audit, audited.audit_store
    assert audit is not None
    real = store.write
    writes: list[list[str]] = []
    failing = threading.Event()

    def write(entries: Sequence[AuditEntry], **kwargs: Any) -> None:
        if failing.is_set():
            raise OSError("disk gone")
        writes.append([e.action for e in entries])
        real(entries, **kwargs)

    monkeypatch.setattr(store, "write", write)
    audit.commit_many([event(n) for n in range(5)])
    assert [w for w in writes if "audit.read" in w] == [["audit.read"] * 5]
    failing.set()
    with pytest.raises(Unavailable):
        audit.commit_many([event(n) for n in range(10, 13)])
    failing.clear()
    audit.commit_many([])  # nothing to wait for
    until_written(lambda: audit.commit_many([event(20)]))
    audit.flush()
    at = [r.entry.at_ms - AT_MS for r in store.records() if r.entry.action == "audit.read"]
    assert sorted(at) == [0, 1, 2, 3, 4, 20]  # the refused batch left no record


def until_written(attempt: Callable[[], object]) -> None:
    """Retry while the log refuses during its back-off after a failure (a bounded loop, as a
    housekeeping timer would retry; no timing is asserted)."""
    for _ in range(400):
        try:
            attempt()
            return
        except Unavailable:
            time.sleep(0.025)
    raise AssertionError("the access log never took the write again")


def test_the_memory_log_commits_all_or_nothing() -> None:
    log = MemoryAccessLog()
    log.commit_many([event(1), event(2)])
    log.failing = True
    with pytest.raises(Unavailable):
        log.commit_many([event(3)])
    assert [e.at_ms - AT_MS for e in log.events] == [1, 2]


def test_a_hold_set_during_a_batch_keeps_its_session_only(
    runtime: Runtime, clock: FixedClock, access_log: MemoryAccessLog, tmp_path: Path
) -> None:
    """The batch is logged; a hold lands on one of its sessions before the tombstones are
    written: that session's recordings stay (stored, served), the others' are purged."""
    tenant, (held, free) = expired_sessions(runtime, clock, tmp_path, sessions=2, each=2)
    retention = runtime.context.retention
    commit_many = retention.audit.commit_many
    session_id = recording(runtime, held[0]).session_id

    def commit_then_hold(events: Sequence[AccessEvent]) -> None:
        commit_many(events)
        retention.hold(tenant, session_id, reason="court order", by=None, actor=cli_actor())

    retention.audit.commit_many = commit_then_hold  # type: ignore[method-assign]
    try:
        assert retention.purge_due() == 2
    finally:
        retention.audit.commit_many = commit_many  # type: ignore[method-assign]
    assert statuses(runtime, held) == [AVAILABLE, AVAILABLE]
    assert all(stored(runtime, r) for r in held)
    assert statuses(runtime, free) == [EXPIRED, EXPIRED]
    assert not any(stored(runtime, r) for r in free)
    # Logged first, as one at a time did: the held session's records say the purge started.
    assert purge_records(access_log) == Counter(held + free)
    assert retention.purge_due() == 0  # held: not due


def test_the_log_failing_mid_purge_erases_nothing_of_its_batch(
    audited: Runtime, clock: FixedClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 2; the log fails on the second: the first is purged, nothing of the second
    (or later) is erased and the purge stops with ``Unavailable`` (a request would answer
    503); a later run finishes, each recording with one purge record."""
    _, sessions = expired_sessions(audited, clock, tmp_path, sessions=5, each=1)
    ids = [ids[0] for ids in sessions]
    retention = audited.context.retention
    retention.pace = PurgePace(batch=2)
    store = audited.audit_store
    real = store.write
    purge_writes: list[int] = []
    failing = threading.Event()

    def write(entries: Sequence[AuditEntry], **kwargs: Any) -> None:
        purges = [e for e in entries if e.action == Action.RETENTION_PURGE.value]
        if purges:
            purge_writes.append(len(purges))
            if len(purge_writes) >= 2 and failing.is_set():
                raise OSError("disk gone")
        real(entries, **kwargs)

    monkeypatch.setattr(store, "write", write)
    failing.set()
    with pytest.raises(Unavailable):
        retention.purge_due()
    assert purge_writes == [2, 2]  # one append a batch; the second failed
    first = [r for r in ids if recording(audited, r).status is EXPIRED]
    rest = [r for r in ids if r not in first]
    assert len(first) == 2  # the first batch
    assert statuses(audited, rest) == [AVAILABLE] * 3
    assert all(stored(audited, r) for r in rest)
    failing.clear()
    finished: list[int] = []
    until_written(lambda: finished.append(retention.purge_due()))
    assert finished == [3]
    assert statuses(audited, ids) == [EXPIRED] * 5
    assert audited.audit is not None
    audited.audit.flush()
    logged = Counter(
        r.entry.recording_id
        for r in store.records()
        if r.entry.action == Action.RETENTION_PURGE.value
    )
    assert logged == Counter(ids)


@pytest.mark.parametrize("crash_at", ["store.delete", "mark_removed_many"])
def test_a_crash_after_the_tombstones_is_finished_by_the_next_run(
    runtime: Runtime,
    clock: FixedClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    crash_at: str,
) -> None:
    """The batch's tombstones are written, then the process dies removing the audio or before
    marking it removed: nothing is served any more, and the next run completes the removal."""
    _, sessions = expired_sessions(runtime, clock, tmp_path, sessions=3, each=1)
    ids = [ids[0] for ids in sessions]

    def crash(*args: object) -> None:
        raise OSError("power cut")

    if crash_at == "store.delete":
        monkeypatch.setattr(runtime.vault.store, "delete", crash)
    else:
        monkeypatch.setattr(runtime.repo, "mark_removed_many", crash)
    with pytest.raises(OSError, match="power cut"):
        runtime.context.retention.purge_due()
    monkeypatch.undo()
    assert statuses(runtime, ids) == [EXPIRED] * 3
    assert {r.recording_id for r in runtime.repo.pending_removals(100)} == set(ids)
    assert runtime.context.retention.purge_due() == 0  # nothing new: only the removals
    assert runtime.repo.pending_removals(100) == []
    assert not any(stored(runtime, r) for r in ids)


def test_a_batch_reads_merged_renditions_once(
    runtime: Runtime,
    clock: FixedClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Retiring renditions costs one read a batch, not one a recording."""
    expired_sessions(runtime, clock, tmp_path, sessions=3, each=2)
    repo = runtime.repo
    calls: Counter[str] = Counter()
    for name in ("get_merged", "merged_renditions"):
        real = getattr(repo, name)

        def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(repo, name, counted)
    runtime.context.retention.pace = PurgePace(batch=4)
    assert runtime.context.retention.purge_due() == 6
    assert calls == Counter({"merged_renditions": 2})


class _Reversed:
    """The repository, handing its due recordings to the purge in the opposite order."""

    def __init__(self, repo: Any) -> None:
        self._repo = repo

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    def due_for_purge(self, now_ms: int, limit: int) -> Sequence[Recording]:
        return list(reversed(self._repo.due_for_purge(now_ms, limit)))


def test_two_purgers_at_once_neither_deadlock_nor_purge_twice(
    runtime: Runtime, clock: FixedClock, access_log: MemoryAccessLog, tmp_path: Path
) -> None:
    """Two purgers take the same due recordings in opposite orders and tombstone them at the
    same moment: the sessions are locked in one order, so one waits for the other (no
    deadlock); each recording is tombstoned (and reported to webhooks) once, and logged by
    each purger that took it, as one at a time did. Each is counted once, by the purger that
    tombstoned it: the loser's re-read finds it gone and does not count it again."""
    _, sessions = expired_sessions(runtime, clock, tmp_path, sessions=6, each=2)
    ids = [r for s in sessions for r in s]
    both = threading.Barrier(2, timeout=30)

    def logged_then_meet(events: Sequence[AccessEvent]) -> None:
        access_log.commit_many(events)
        both.wait()  # both batches logged: their tombstones race

    log = _Logged(access_log, logged_then_meet)
    tally = _Tally()
    purgers = [
        Retention(runtime.vault, runtime.repo, log, tally),  # type: ignore[arg-type]
        Retention(runtime.vault, _Reversed(runtime.repo), log, tally),  # type: ignore[arg-type]
    ]
    results: list[int] = []
    errors: list[BaseException] = []

    def run(retention: Retention) -> None:
        try:
            results.append(retention.purge_due())
        except BaseException as exc:
            errors.append(exc)
            both.abort()

    threads = [threading.Thread(target=run, args=(p,)) for p in purgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(results) == 2 and sum(results) == len(ids)
    assert tally.total == len(ids)  # the metric too
    assert statuses(runtime, ids) == [EXPIRED] * len(ids)
    assert not any(stored(runtime, r) for r in ids)
    with runtime.repo.engine.connect() as conn:
        reported = Counter(
            conn.execute(
                select(webhook_events.c.recording_id).where(
                    webhook_events.c.type == "recording.expired"
                )
            ).scalars()
        )
    assert reported == Counter(ids)
    assert purge_records(access_log) == Counter(ids * 2)


class _Tally:
    """Retention counts: how many recordings were counted purged."""

    def __init__(self) -> None:
        self.total = 0

    def hold_changed(self, action: str) -> None:
        pass

    def purged(self, recordings: int) -> None:
        self.total += recordings


class _Logged:
    """An access log whose ``commit_many`` runs ``hook`` instead (the rest is ``log``'s)."""

    def __init__(self, log: MemoryAccessLog, hook: Callable[[Sequence[AccessEvent]], None]):
        self._log = log
        self.commit_many = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def test_the_purge_rests_after_each_batch_where_it_shares_the_writer(
    runtime: Runtime, clock: FixedClock, tmp_path: Path
) -> None:
    """SQLite (one writer for the API and the purge): small batches, each followed by a rest as
    long as it took, so the API's writes get the lock between batches; PostgreSQL: no rest.
    The rest is the batch's own time times ``rest``."""
    retention = runtime.context.retention
    sqlite = runtime.engine.dialect.name == "sqlite"
    assert retention.pace == (SHARED_WRITER_PACE if sqlite else PurgePace())
    _, sessions = expired_sessions(runtime, clock, tmp_path, sessions=5, each=1)
    rests: list[float] = []
    retention.sleep = rests.append
    retention.pace = PurgePace(batch=2, rest=1.5)
    assert retention.purge_due() == 5
    assert len(rests) == 3 and all(r > 0 for r in rests)
    assert all(recording(runtime, ids[0]).status is EXPIRED for ids in sessions)


def test_the_tombstone_statement_finds_its_rows_by_key_on_sqlite(
    runtime: Runtime, clock: FixedClock, tmp_path: Path
) -> None:
    """SQLite's plan for the batch's UPDATE searches ``recordings`` by its key: with the
    (id, status) pairs alone it scanned the whole table under the database's write lock."""
    if runtime.engine.dialect.name != "sqlite":
        return  # PostgreSQL probes the key either way (BENCHMARKS.md)
    _, sessions = expired_sessions(runtime, clock, tmp_path, sessions=1, each=2)
    batch = [recording(runtime, rid) for rid in sessions[0]]
    statement = tombstone_statement(batch, {"status": "expired"}, unless_held=True)
    sql = str(statement.compile(runtime.engine, compile_kwargs={"literal_binds": True}))
    with runtime.engine.connect() as conn:
        plan = [str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
    assert any(step.startswith("SEARCH recordings USING") for step in plan), plan
    assert not any(step.startswith("SCAN recordings") for step in plan), plan
