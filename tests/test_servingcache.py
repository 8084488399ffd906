"""The serving cache: read-through, invalidated by its own writes, here at once and in other
processes through the database's epoch (SQLite and PostgreSQL alike)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from tapevault.core.model import (
    Recording,
    RecordingStatus,
    Session,
    SessionKind,
    SessionStatus,
    Tenant,
)
from tapevault.core.servingcache import ServingCache
from tapevault.db.engine import make_engine, migrate
from tapevault.db.repository import SqlRepository

P, S = "p1", "s1"


class Spy(SqlRepository):
    """The repository, counting the reads the cache passes through and able to run something
    in the middle of one (another thread's write landing while a read is in flight)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.reads = 0
        self.during_read: Callable[[], None] | None = None

    def get_recording(self, recording_id: str) -> Recording | None:
        self.reads += 1
        found = super().get_recording(recording_id)
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            hook()
        return found

    def get_session_with_recordings(
        self, partner_id: str, session_id: str
    ) -> tuple[Session | None, Sequence[Recording]]:
        self.reads += 1
        return super().get_session_with_recordings(partner_id, session_id)


@pytest.fixture
def repo(database_url: str) -> Iterator[Spy]:
    engine = make_engine(database_url)
    migrate(engine)
    repo = Spy(engine)
    repo.create_tenant(Tenant(P, "clinic", "secret", 604800, 1000))
    repo.create_session(Session(S, P, SessionKind.AMBIENT, SessionStatus.COMPLETED, 2000))
    for rid, seq in (("r1", 1), ("r2", 2)):
        repo.add_recording(
            Recording(
                recording_id=rid,
                session_id=S,
                partner_id=P,
                sequence_number=seq,
                status=RecordingStatus.AVAILABLE,
                storage_key=f"{P}/{S}/{rid}.wav",
                sample_rate=16000,
                channels=1,
                bits_per_sample=16,
                duration_ms=1000,
                size_bytes=32044,
                sha256="ab" * 32,
                created_ms=3000,
                expires_ms=2000 + 604800_000,
            )
        )
    try:
        yield repo
    finally:
        engine.dispose()


def test_servable_recordings_and_settled_sessions_are_read_once(repo: Spy) -> None:
    """After the first read, the hot path does not touch the database."""
    cache = ServingCache(repo, check_seconds=3600)
    for _ in range(3):
        assert cache.servable_recording("r1") is not None
        session, recordings = cache.settled_session(P, S)
        assert session is not None and [r.recording_id for r in recordings] == ["r1", "r2"]
    assert repo.reads == 2


def test_a_write_through_the_cache_is_seen_here_at_once(repo: Spy) -> None:
    """A deletion written through the cache is never served from it afterwards."""
    cache = ServingCache(repo, check_seconds=3600)
    found = cache.servable_recording("r1")
    assert found is not None
    cache.settled_session(P, S)
    generation = cache.generation
    assert cache.tombstone(found, RecordingStatus.DELETED, purged_ms=5000, deleted_by="t")
    again = cache.servable_recording("r1")
    assert again is not None and again.status is RecordingStatus.DELETED
    _, recordings = cache.settled_session(P, S)
    assert recordings[0].status is RecordingStatus.DELETED
    assert cache.generation > generation  # memos derived from the cache drop themselves


def test_another_process_sees_the_write_within_its_check_period(repo: Spy) -> None:
    """Two caches on one database are two processes: one's hold reaches the other through the
    epoch, without anyone calling an invalidation by hand."""
    here = ServingCache(repo, check_seconds=3600)
    there = ServingCache(repo, check_seconds=0)
    stale = ServingCache(repo, check_seconds=3600)
    for cache in (there, stale):
        session, _ = cache.settled_session(P, S)
        assert session is not None and not session.held
    here.set_hold(P, S, reason="litigation", by="legal", set_ms=4000)
    session, _ = there.settled_session(P, S)
    assert session is not None and session.held
    session, _ = stale.settled_session(P, S)
    assert session is not None and not session.held  # until its next check


def test_a_batch_bumps_the_epoch_once(repo: Spy) -> None:
    """A purge of many recordings tells the other processes once, at its end, and this
    process at every write."""
    cache = ServingCache(repo, check_seconds=3600)
    before = repo.cache_epoch()
    with cache.batch():
        for rid in ("r1", "r2"):
            found = cache.servable_recording(rid)
            assert found is not None
            cache.tombstone(found, RecordingStatus.EXPIRED, purged_ms=5000)
            after = cache.servable_recording(rid)
            assert after is not None and after.status is RecordingStatus.EXPIRED
        assert repo.cache_epoch() == before
    assert repo.cache_epoch() == before + 1
    cache.set_session_retention(P, S, 3600)
    assert repo.cache_epoch() == before + 2


def test_a_batch_that_fails_halfway_still_tells_the_other_processes(repo: Spy) -> None:
    """What was committed before the failure is not left cached elsewhere."""
    cache = ServingCache(repo, check_seconds=3600)
    before = repo.cache_epoch()
    with pytest.raises(RuntimeError), cache.batch():
        cache.set_recording_expiry("r1", 9000, None, "session")
        raise RuntimeError("the next write failed")
    assert repo.cache_epoch() == before + 1


def test_a_read_overtaken_by_a_write_is_not_kept(repo: Spy) -> None:
    """A row read just before a write commits is answered once but never cached: the next read
    sees the write."""
    cache = ServingCache(repo, check_seconds=3600)
    current = repo.get_recording("r1")
    assert current is not None

    def delete() -> None:
        cache.tombstone(current, RecordingStatus.DELETED, purged_ms=5000)

    repo.during_read = delete
    first = cache.servable_recording("r1")
    assert first is not None and first.status is RecordingStatus.AVAILABLE  # read before
    again = cache.servable_recording("r1")
    assert again is not None and again.status is RecordingStatus.DELETED


def test_readers_racing_a_deletion_never_keep_the_deleted_row(repo: Spy) -> None:
    """Threads reading while another deletes: once the deletion returns, no read from this
    cache answers the recording as it was."""
    cache = ServingCache(repo, check_seconds=3600)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            cache.servable_recording("r1")

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        time.sleep(0.05)
        current = repo.get_recording("r1")
        assert current is not None
        assert cache.tombstone(current, RecordingStatus.DELETED, purged_ms=5000)
        for _ in range(200):
            seen = cache.servable_recording("r1")
            assert seen is not None and seen.status is RecordingStatus.DELETED
    finally:
        stop.set()
        for reader in readers:
            reader.join()
