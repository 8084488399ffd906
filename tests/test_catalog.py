"""Finding sessions in the repository (SQLite and PostgreSQL): the SQL status filter agrees with
the lifecycle rule, keyset pages neither skip nor repeat while sessions are created, and the
filter and cursor parser refuses what it cannot read."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapevault.core.catalog import (
    MAX_LIMIT,
    PARAMETERS,
    Position,
    SessionQuery,
    decode_cursor,
    encode_cursor,
    page,
    parse_session_query,
)
from tapevault.core.lifecycle import session_status
from tapevault.core.model import (
    Recording,
    RecordingStatus,
    Session,
    SessionKind,
    SessionStatus,
    Tenant,
)
from tapevault.db.engine import make_engine, migrate
from tapevault.db.repository import SqlRepository
from tapevault.errors import InvalidRequest, Unavailable


@pytest.fixture
def repo(database_url: str) -> Iterator[SqlRepository]:
    engine = make_engine(database_url)
    migrate(engine)
    try:
        found = SqlRepository(engine)
        found.create_tenant(Tenant("p1", "one", "s", 604800, 0))
        found.create_tenant(Tenant("p2", "two", "s", 604800, 0))
        yield found
    finally:
        engine.dispose()


def make_session(sid: str, created_ms: int, pid: str = "p1", **fields: object) -> Session:
    base = Session(sid, pid, SessionKind.AMBIENT, SessionStatus.CREATED, created_ms)
    return replace(base, **fields)  # type: ignore[arg-type]


def make_recording(
    rid: str, sid: str, seq: int, status: RecordingStatus, pid: str = "p1", expires_ms: int = 10**12
) -> Recording:
    return Recording(
        recording_id=rid,
        session_id=sid,
        partner_id=pid,
        sequence_number=seq,
        status=status,
        storage_key=f"{pid}/{sid}/{rid}.wav",
        sample_rate=16000,
        channels=1,
        bits_per_sample=16,
        duration_ms=1000,
        size_bytes=32044,
        sha256="ab" * 32,
        created_ms=1,
        expires_ms=expires_ms,
    )


def ids(repo: SqlRepository, query: SessionQuery) -> list[str]:
    return [s.session_id for s, _ in repo.find_sessions(query)]


def test_status_filter_agrees_with_the_lifecycle_rule(repo: SqlRepository) -> None:
    """Every stored status × every pair of recording states (and none): the SQL filter for each
    status finds exactly the sessions the lifecycle rule gives that status."""
    states = [None, *RecordingStatus]
    made: dict[str, SessionStatus] = {}
    counter = itertools.count()
    for stored in (SessionStatus.CREATED, SessionStatus.IN_PROGRESS, SessionStatus.COMPLETED):
        for first, second in itertools.combinations_with_replacement(states, 2):
            if first is None and second is not None:
                continue
            sid = f"s{next(counter)}"
            session = make_session(sid, 1000, status=stored)
            repo.create_session(session)
            recordings = []
            for seq, state in enumerate((first, second), start=1):
                if state is not None:
                    recordings.append(make_recording(f"{sid}r{seq}", sid, seq, state))
                    repo.add_recording(recordings[-1])
            made[sid] = session_status(session, recordings)
    # A merged rendition (sequence 0) still processing is not one of the session's recordings.
    merged = replace(
        make_recording("s0merged", "s0", 0, RecordingStatus.PROCESSING), channel="merged"
    )
    repo.add_recording(merged)
    assert set(made.values()) == set(SessionStatus)  # every status is exercised
    for status in SessionStatus:
        query = SessionQuery("p1", statuses=frozenset({status}), limit=MAX_LIMIT)
        assert sorted(ids(repo, query)) == sorted(s for s, st in made.items() if st is status)
    both = SessionQuery("p1", statuses=frozenset(SessionStatus), limit=MAX_LIMIT)
    assert sorted(ids(repo, both)) == sorted(made)
    # The status each listed session shows, from the facts aggregated in SQL, is the rule's too.
    shown = page(both, repo.find_sessions(both)).items
    assert {i.session.session_id: i.status for i in shown} == made
    assert {i.session.session_id: i.recording_count for i in shown} == {
        sid: len(repo.list_recordings("p1", sid)) for sid in made
    }


def test_filters_each_select_their_sessions(repo: SqlRepository) -> None:
    """created window (inclusive after, exclusive before), kind, external id, provider, hold,
    expiring_before (kept audio only), and another tenant's sessions never."""
    repo.create_session(make_session("a", 1000, provider_id="dr-1"))
    repo.create_session(make_session("b", 2000, kind=SessionKind.FORM_FILLING))
    repo.create_session(make_session("c", 3000, kind=SessionKind.CALL, external_id="CA1"))
    repo.create_session(make_session("d", 4000, hold_set_ms=4500, hold_reason="x"))
    repo.create_session(make_session("e", 5000, provider_id="dr-1"))
    repo.create_session(make_session("x", 3000, pid="p2", external_id="CA1", provider_id="dr-1"))
    repo.add_recording(make_recording("ra", "a", 1, RecordingStatus.AVAILABLE, expires_ms=9000))
    repo.add_recording(make_recording("rb", "b", 1, RecordingStatus.EXPIRED, expires_ms=8000))
    repo.add_recording(make_recording("rx", "x", 1, RecordingStatus.AVAILABLE, pid="p2"))

    def find(**filters: object) -> list[str]:
        return ids(repo, SessionQuery("p1", **filters))  # type: ignore[arg-type]

    assert find() == ["e", "d", "c", "b", "a"]
    assert find(created_after_ms=2000, created_before_ms=4000) == ["c", "b"]
    assert find(kinds=frozenset({SessionKind.CALL, SessionKind.FORM_FILLING})) == ["c", "b"]
    assert find(external_id="CA1") == ["c"]
    assert find(provider_id="dr-1") == ["e", "a"]
    assert find(on_hold=True) == ["d"]
    assert find(on_hold=False) == ["e", "c", "b", "a"]
    assert find(expiring_before_ms=9001) == ["a"]  # b's audio is gone already
    assert find(expiring_before_ms=9000) == []
    assert ids(repo, SessionQuery("p2")) == ["x"]
    assert find(provider_id="dr-1", created_after_ms=2000) == ["e"]


def test_pages_neither_skip_nor_repeat_while_sessions_are_created(repo: SqlRepository) -> None:
    """60 sessions, 20 of them created in the same millisecond, paged 7 at a time while
    sessions are created between pages both newer than any seen and behind the cursor: every
    session that existed at the start is seen once, the ones made behind the cursor once too,
    the newer ones never, and the order is strictly newest first."""
    for n in range(60):
        created = 10_000 if n < 20 else 10_000 + n * 10
        repo.create_session(make_session(f"s{n:03d}", created))
    seen: list[tuple[int, str]] = []
    behind: set[str] = set()
    cursor: Position | None = None
    for round_ in itertools.count():
        query = SessionQuery("p1", after=cursor, limit=7)
        result = page(query, repo.find_sessions(query))
        seen += [(i.session.created_ms, i.session.session_id) for i in result.items]
        repo.create_session(make_session(f"new{round_}", 99_000 + round_))  # ahead: not seen
        if seen and round_ % 2 == 0:
            older = f"late{round_}"  # created behind the cursor: its page is still to come
            repo.create_session(make_session(older, max(seen[-1][0] - 5, 0)))
            behind.add(older)
        if result.next_cursor is None:
            break
        cursor = decode_cursor(result.next_cursor)
    names = [sid for _, sid in seen]
    assert len(names) == len(set(names)), "a session was shown twice"
    assert set(names) == {f"s{n:03d}" for n in range(60)} | behind
    assert seen == sorted(seen, reverse=True)


def test_pages_hold_under_concurrent_inserts(repo: SqlRepository) -> None:
    """A thread creates sessions as fast as it can while another pages through: every session
    that existed before paging began is seen exactly once."""
    for n in range(40):
        repo.create_session(make_session(f"old{n:02d}", 1000 + n % 5))
    stop = threading.Event()

    def create() -> None:
        for n in itertools.count():
            if stop.is_set() or n > 2000:
                return
            repo.create_session(make_session(f"hot{n:05d}", 1000 + n % 7))

    writer = threading.Thread(target=create)
    writer.start()
    try:
        seen: list[str] = []
        cursor = None
        while True:
            query = SessionQuery("p1", after=cursor, limit=3)
            result = page(query, repo.find_sessions(query))
            seen += [i.session.session_id for i in result.items]
            if result.next_cursor is None:
                break
            cursor = decode_cursor(result.next_cursor)
    finally:
        stop.set()
        writer.join()
    assert len(seen) == len(set(seen))
    assert {f"old{n:02d}" for n in range(40)} <= set(seen)


def test_cursor_round_trips_and_refuses_anything_else() -> None:
    """A next_cursor decodes to its position; altered, truncated or foreign text is a 400."""
    position = Position(1_800_000_000_123, "ffs-0b9e")
    assert decode_cursor(encode_cursor(position)) == position
    good = encode_cursor(position)
    for bad in ("", good[:-3], "!!!!", "W10", "WyIxIiwiYSJd", "x" * 300, "WzEsIiJd", "Wy0xLCJhIl0"):
        with pytest.raises(InvalidRequest, match="cursor"):
            decode_cursor(bad)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("created_after", "yesterday"),
        ("created_before", "2026-13-01T00:00:00Z"),
        ("created_after", "99999-01-01"),
        ("status", "done"),
        ("status", "completed,"),
        ("kind", "podcast"),
        ("external_id", ""),
        ("provider_id", "p" * 201),
        ("on_hold", "maybe"),
        ("expiring_before", "-5"),
        ("cursor", "nope"),
        ("limit", "0"),
        ("limit", "501"),
        ("limit", "ten"),
        ("status", "a\x00b"),
    ],
)
def test_each_bad_value_is_refused_naming_its_parameter(name: str, value: str) -> None:
    """A value the filter cannot read is InvalidRequest (400) whose message names it."""
    with pytest.raises(InvalidRequest, match=name):
        parse_session_query("p1", [(name, value)])


def test_unknown_and_repeated_parameters_are_refused() -> None:
    """An unknown name (a typo such as statuss) or a name given twice is refused, not ignored."""
    with pytest.raises(InvalidRequest, match="statuss"):
        parse_session_query("p1", [("statuss", "completed")])
    with pytest.raises(InvalidRequest, match="status is given more than once"):
        parse_session_query("p1", [("status", "created"), ("status", "failed")])
    query = parse_session_query(
        "p1",
        [
            ("created_after", "2026-12-01T00:00:00Z"),
            ("created_before", "1800000000"),
            ("status", "processing,failed"),
            ("kind", "call"),
            ("on_hold", "false"),
            ("limit", "500"),
        ],
    )
    assert query.created_after_ms == 1_796_083_200_000
    assert query.created_before_ms == 1_800_000_000_000
    assert query.statuses == {SessionStatus.PROCESSING, SessionStatus.FAILED}
    assert query.kinds == {SessionKind.CALL} and query.on_hold is False and query.limit == 500
    assert set(PARAMETERS) >= {"cursor", "limit", "expiring_before"}


@given(
    st.lists(
        st.tuples(
            st.sampled_from([*PARAMETERS, "x", ""]),
            st.one_of(
                st.text(max_size=40),
                st.from_regex(r"[0-9TZ:.+,-]{0,30}", fullmatch=True),
                st.sampled_from(
                    ["true", "created,failed", "call", encode_cursor(Position(1, "s"))]
                ),
            ),
        ),
        max_size=6,
    )
)
def test_any_query_parses_or_is_refused_never_crashes(pairs: list[tuple[str, str]]) -> None:
    """Whatever a client sends, the parser returns a query within bounds or raises
    InvalidRequest; no other exception can become a 500."""
    try:
        query = parse_session_query("p1", pairs)
    except InvalidRequest:
        return
    assert 1 <= query.limit <= MAX_LIMIT
    for ms in (query.created_after_ms, query.created_before_ms, query.expiring_before_ms):
        assert ms is None or ms >= 0


def test_an_unreachable_database_is_unavailable_not_a_crash() -> None:
    """With the database down, finding sessions raises Unavailable (a 503 that the next
    request, once the database is back, does not remember), not the driver's error (a 500)."""
    engine = make_engine("postgresql://nobody@127.0.0.1:9/nothing")  # nothing listens on port 9
    try:
        with pytest.raises(Unavailable):
            SqlRepository(engine).find_sessions(SessionQuery("p1"))
    finally:
        engine.dispose()


def test_a_nul_in_a_filter_is_named_as_the_reason() -> None:
    """A short value holding NUL is refused saying so, not as if it were too long (the old
    message, "at most 200 characters" for a 3-character value, sent users the wrong way)."""
    with pytest.raises(InvalidRequest, match="without NUL"):
        parse_session_query("p1", [("external_id", "a\x00b")])
