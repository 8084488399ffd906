"""The Repository contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tapevault.core.model import (
    Recording,
    RecordingStatus,
    Session,
    SessionKind,
    SessionStatus,
    SigningKey,
    Tenant,
)
from tapevault.core.ports import ChannelTaken, MergePlanner, SequenceTaken
from tapevault.db.engine import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    migrate,
)
from tapevault.db.repository import SqlRepository
from tapevault.db.schema import metadata, sessions


@pytest.fixture
def repo(database_url: str) -> Iterator[SqlRepository]:
    engine = make_engine(database_url)
    migrate(engine)
    try:
        yield SqlRepository(engine)
    finally:
        engine.dispose()


def partner(pid: str = "p1") -> Tenant:
    return Tenant(pid, "clinic", "secret", 604800, 1000)


def session(sid: str = "s1", pid: str = "p1") -> Session:
    return Session(sid, pid, SessionKind.AMBIENT, SessionStatus.CREATED, 2000)


def recording(rid: str, seq: int, sid: str = "s1", pid: str = "p1") -> Recording:
    return Recording(
        recording_id=rid,
        session_id=sid,
        partner_id=pid,
        sequence_number=seq,
        status=RecordingStatus.AVAILABLE,
        storage_key=f"{pid}/{sid}/{rid}.wav",
        sample_rate=16000,
        channels=1,
        bits_per_sample=16,
        duration_ms=1234,
        size_bytes=39532,
        sha256="ab" * 32,
        created_ms=3000,
        expires_ms=2000 + 604800_000,
    )


def test_migrations_match_schema(database_url: str) -> None:
    """Running the migrations yields exactly the tables the code describes, at the head revision."""
    engine = make_engine(database_url)
    try:
        assert migrate(engine) == head_revision()
        assert current_revision(engine) == head_revision()
        migrate(engine)  # idempotent
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_tenant_round_trip(repo: SqlRepository) -> None:
    """A tenant reads back equal by each of its three ids; an unknown id is None."""
    tenant = partner()
    repo.create_tenant(tenant)
    assert repo.get_tenant("p1") == tenant
    assert repo.get_tenant_by_workspace(tenant.workspace_id) == tenant
    assert repo.get_tenant_by_kore_client(tenant.kore_client_id) == tenant
    assert repo.get_tenant("nope") is None


def test_sessions_are_scoped_by_partner(repo: SqlRepository) -> None:
    """A session is visible to its partner only."""
    repo.create_tenant(partner("p1"))
    repo.create_tenant(partner("p2"))
    repo.create_session(session("s1", "p1"))
    assert repo.get_session("p1", "s1") == session("s1", "p1")
    assert repo.get_session("p2", "s1") is None
    repo.update_session_status("p2", "s1", SessionStatus.COMPLETED, 9)
    assert repo.get_session("p1", "s1") == session("s1", "p1")  # foreign update is a no-op
    repo.update_session_status("p1", "s1", SessionStatus.COMPLETED, 9)
    got = repo.get_session("p1", "s1")
    assert got is not None and got.status is SessionStatus.COMPLETED and got.ended_ms == 9


def test_recordings_ordered_scoped_and_unique_by_sequence(repo: SqlRepository) -> None:
    """Recordings list by sequence, within the partner; a taken sequence number raises."""
    repo.create_tenant(partner())
    repo.create_tenant(partner("p2"))
    repo.create_session(session())
    assert repo.next_sequence_number("s1") == 1
    repo.add_recording(recording("r2", 2))
    repo.add_recording(recording("r1", 1))
    assert repo.next_sequence_number("s1") == 3
    assert [r.recording_id for r in repo.list_recordings("p1", "s1")] == ["r1", "r2"]
    assert repo.list_recordings("p2", "s1") == []
    assert repo.get_recording("r1") == recording("r1", 1)
    with pytest.raises(SequenceTaken):
        repo.add_recording(recording("r3", 2))


def test_signing_keys_newest_first(repo: SqlRepository) -> None:
    """Keys list newest first (the first signs) and can be removed."""
    repo.add_signing_key(SigningKey("a", b"\x01" * 32, 1))
    repo.add_signing_key(SigningKey("b", b"\x02" * 32, 2))
    assert [k.key_id for k in repo.list_signing_keys()] == ["b", "a"]
    assert repo.list_signing_keys()[0].secret == b"\x02" * 32
    assert repo.remove_signing_key("b") is True
    assert repo.remove_signing_key("b") is False
    assert [k.key_id for k in repo.list_signing_keys()] == ["a"]


def test_a_call_channel_holds_one_recording_unless_it_failed(repo: SqlRepository) -> None:
    """A second recording of a call channel raises ChannelTaken (not SequenceTaken, so nobody
    retries it); once the holder failed, the channel takes a new one; other channels and the
    merged rendition are not limited."""
    repo.create_tenant(partner())
    repo.create_session(session())
    repo.add_recording(replace(recording("r1", 1), channel="inbound"))
    with pytest.raises(ChannelTaken) as info:
        repo.add_recording(replace(recording("r2", 2), channel="inbound"))
    assert info.value.channel == "inbound"
    repo.add_recording(replace(recording("r3", 3), channel="outbound"))
    failed = replace(recording("r1", 1), channel="inbound", status=RecordingStatus.FAILED)
    assert repo.update_recording(failed, expect=RecordingStatus.AVAILABLE)
    repo.add_recording(replace(recording("r4", 4), channel="inbound"))
    for rid, seq in (("m1", 0), ("m2", 5)):
        merged = replace(recording(rid, seq), channel="merged", status=RecordingStatus.DELETED)
        repo.add_recording(merged)  # tombstoned renditions stay as rows: never a conflict


def test_migration_keeps_the_latest_of_duplicate_channels(database_url: str) -> None:
    """A database that already holds duplicate channel recordings (the old race) migrates: the
    latest of each channel stays, the others are marked failed with the reason."""
    engine = make_engine(database_url)
    try:
        migrate(engine)
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0009-1")  # the schema before the unique channel index
        repo = SqlRepository(engine)
        repo.create_tenant(partner())
        with engine.begin() as connection:  # the columns sessions had then (no provider_id)
            connection.execute(
                sessions.insert().values(
                    session_id="s1",
                    partner_id="p1",
                    kind="ambient",
                    status="created",
                    created_ms=1000,
                )
            )
        for seq in (1, 2, 3):
            repo.add_recording(replace(recording(f"in{seq}", seq), channel="inbound"))
        repo.add_recording(replace(recording("out", 4), channel="outbound"))
        migrate(engine)
        states = {r.recording_id: r.status for r in repo.list_recordings("p1", "s1")}
        assert states == {
            "in1": RecordingStatus.FAILED,
            "in2": RecordingStatus.FAILED,
            "in3": RecordingStatus.AVAILABLE,
            "out": RecordingStatus.AVAILABLE,
        }
        assert "duplicate" in (repo.get_recording("in1").failure_reason or "")  # type: ignore[union-attr]
        with pytest.raises(ChannelTaken):
            repo.add_recording(replace(recording("in5", 5), channel="inbound"))
    finally:
        engine.dispose()


def test_the_last_recording_to_finish_sees_the_others_finished(repo: SqlRepository) -> None:
    """Two recordings of one ended session finishing at once: the second transaction waits for
    the first (the session is locked before anything is read), so it sees both finished and
    can queue the merge; unlocked, each would see the other still processing and none would."""
    repo.create_tenant(partner())
    repo.create_session(replace(session(), status=SessionStatus.COMPLETED))
    for rid, seq in (("r1", 1), ("r2", 2)):
        repo.add_recording(replace(recording(rid, seq), status=RecordingStatus.PROCESSING))
    first_planning = threading.Event()
    release = threading.Event()
    seen: dict[str, list[RecordingStatus]] = {}

    def planner(name: str) -> MergePlanner:
        def plan(_session: Session, found: Sequence[Recording]) -> None:
            seen[name] = [r.status for r in found]
            if name == "r1":
                first_planning.set()
                release.wait(10)

        return plan

    def finish(rid: str, seq: int) -> None:
        repo.finish_recording(
            recording(rid, seq), expect=RecordingStatus.PROCESSING, plan=planner(rid)
        )

    first = threading.Thread(target=finish, args=("r1", 1))
    second = threading.Thread(target=finish, args=("r2", 2))
    first.start()
    try:
        assert first_planning.wait(10)
        second.start()
        second.join(0.5)  # locked out: it cannot plan until the first commits
        assert "r2" not in seen
    finally:
        release.set()
        first.join(10)
        if second.is_alive() or second.ident is not None:
            second.join(10)
    assert seen == {
        "r1": [RecordingStatus.AVAILABLE, RecordingStatus.PROCESSING],
        "r2": [RecordingStatus.AVAILABLE, RecordingStatus.AVAILABLE],
    }
