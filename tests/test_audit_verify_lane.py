"""The verifier's fast lane (a clean run of records accepted without the general machinery) and
the reader's canonical bytes straight from stored JSON: both must decide exactly as the slow
path does, on clean logs and on every kind of tampering, whatever comes before it."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from tapevault.config import Settings
from tapevault.core import merkle
from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.audit import (
    GENESIS_HASH,
    AuditRecord,
    Encoded,
    canonical_bytes,
    chain,
    encoded,
    record_hash,
)
from tapevault.core.auditverify import WINDOW, VerifyReport, verify
from tapevault.core.clock import FixedClock
from tapevault.db.auditstore import _record_of, entry_json
from tapevault.runtime import Runtime, open_runtime
from tests.auditentries import FAKE, KEYS, SIGNER, make_entry

L = 5 * WINDOW + 20  # long enough for the lane to run, leave and come back more than once
ENTRIES = [make_entry(i) for i in range(L)]
CLEAN = chain(ENTRIES, prev_hash=GENESIS_HASH, first_seq=1)
CPS = [SIGNER.sign(r.seq, r.hash, r.seq) for r in CLEAN if r.seq % 25 == 0]
LATE = 4 * WINDOW + 3  # a record after a long clean run


def as_row(rec: AuditRecord, entry_text: str | None = None) -> tuple[Any, ...]:
    """The record as the database returns it (``ROW_COLUMNS`` order)."""
    e = rec.entry
    body = entry_json(e) if entry_text is None else entry_text
    return (rec.seq, e.at_ms, e.tenant_id, e.action, e.actor_id, e.session_id, e.recording_id,
            body, rec.prev_hash, rec.hash)  # fmt: skip


def as_read(row: tuple[Any, ...]) -> AuditRecord | Encoded:
    """What ``records_to_verify`` yields for ``row`` (the columns override the JSON)."""
    seq, at_ms, tenant, action, actor, session, recording, body, prev, digest = row
    try:
        values = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _record_of(*row)
    if type(values) is not dict:
        return _record_of(*row)
    values.update(at_ms=at_ms, tenant_id=tenant, action=action, actor_id=actor)
    values.update(session_id=session, recording_id=recording)
    fast = encoded(seq, prev, digest, values)
    return _record_of(*row) if fast is None else fast


def both(rows: list[AuditRecord], **kwargs: Any) -> VerifyReport:
    """Verify ``rows`` four ways (general machinery or lane; records or stored-JSON items) and
    require the same report and the same records and bytes told to ``on_record``."""
    outcomes = []
    for fast_lane in (False, True):
        for read in (False, True):
            told: list[tuple[int, bytes | None]] = []
            items: list[AuditRecord | Encoded] = (
                [as_read(as_row(r)) for r in rows] if read else list(rows)
            )
            report = verify(
                iter(items),
                kwargs.get("cps", CPS),
                KEYS,
                max_findings=kwargs.get("max_findings", 20),
                on_record=lambda seq, data, told=told: told.append((seq, data)),
                fast_lane=fast_lane,
            )
            outcomes.append((report, told))
    slow_report, slow_told = outcomes[0]
    for report, told in outcomes[1:]:
        assert report == slow_report
        assert told == slow_told
    return slow_report


def renumber(rows: list[AuditRecord], first: int = 1) -> list[AuditRecord]:
    return [replace(r, seq=first + i) for i, r in enumerate(rows)]


def edited(rows: list[AuditRecord], seq: int, *, rehash: bool = False) -> list[AuditRecord]:
    out = list(rows)
    old = out[seq - 1]
    entry = replace(old.entry, status=299)
    out[seq - 1] = replace(
        old, entry=entry, hash=record_hash(old.seq, entry, old.prev_hash) if rehash else old.hash
    )
    return out


def inserted(seq: int, *, valid: bool) -> list[AuditRecord]:
    prev = CLEAN[seq - 2].hash
    digest = record_hash(seq, FAKE, prev) if valid else "e" * 64
    rows = list(CLEAN)
    rows.insert(seq - 1, AuditRecord(seq, FAKE, prev, digest))
    return renumber(rows)


def swapped(a: int, b: int, how: str) -> list[AuditRecord]:
    rows = list(CLEAN)
    ra, rb = rows[a - 1], rows[b - 1]
    if how == "seq":
        rows[a - 1], rows[b - 1] = replace(ra, seq=b), replace(rb, seq=a)
        return sorted(rows, key=lambda r: r.seq)
    if how == "entry":
        rows[a - 1], rows[b - 1] = replace(ra, entry=rb.entry), replace(rb, entry=ra.entry)
    else:
        rows[a - 1], rows[b - 1] = replace(rb, seq=a), replace(ra, seq=b)
    return rows


# --- the lane against the general machinery ------------------------------------------------


def test_clean_long_log_is_clean_either_way() -> None:
    report = both(CLEAN)
    assert report.ok and report.records == L and report.head_hash == CLEAN[-1].hash


@pytest.mark.parametrize("seq", [1, 2, WINDOW, WINDOW + 1, LATE, L - WINDOW, L - 1, L])
@pytest.mark.parametrize("rehash", [False, True], ids=["edited", "edited-rehashed"])
def test_modified_record_anywhere(seq: int, rehash: bool) -> None:
    """A modified record right after a long clean run is reported as before."""
    report = both(edited(CLEAN, seq, rehash=rehash))
    if rehash and seq == L:
        assert report.ok  # nothing after it and no checkpoint over it: undetectable either way
    else:
        assert report.findings[0].kind == "modified" and report.findings[0].seq == seq


@pytest.mark.parametrize("seq", [1, LATE, L])
@pytest.mark.parametrize("renumbered", [False, True])
def test_removed_record(seq: int, renumbered: bool) -> None:
    rows = CLEAN[: seq - 1] + CLEAN[seq:]
    report = both(renumber(rows) if renumbered else rows)
    if seq == L:
        assert report.ok  # a truncated end no checkpoint covers: undetectable either way
    else:
        assert report.findings[0].kind == "removed" and report.findings[0].seq == seq


@pytest.mark.parametrize("seq", [2, LATE, L])
@pytest.mark.parametrize("valid", [True, False], ids=["valid-hash", "invalid-hash"])
def test_inserted_record(seq: int, valid: bool) -> None:
    report = both(inserted(seq, valid=valid))
    assert report.findings[0].kind == "inserted" and report.findings[0].seq == seq


@pytest.mark.parametrize(("a", "b"), [(1, 2), (LATE, LATE + 1), (LATE, LATE + 5), (L - 1, L)])
@pytest.mark.parametrize("how", ["seq", "columns", "entry"])
def test_reordered_pair(a: int, b: int, how: str) -> None:
    report = both(swapped(a, b, how))
    assert report.findings[0].kind == "reordered" and report.findings[0].seq == a


def test_record_moved_far_later() -> None:
    rows = list(CLEAN)
    moved = rows.pop(LATE - 1)
    rows.insert(LATE + WINDOW + 10, moved)
    assert both(renumber(rows)).findings


def test_replayed_copy_and_forged_rival_after_a_clean_run() -> None:
    copy = list(CLEAN)
    copy.insert(LATE, CLEAN[LATE - 1])
    assert both(renumber(copy)).findings
    prev = CLEAN[LATE - 2].hash
    rival = AuditRecord(LATE, FAKE, prev, record_hash(LATE, FAKE, prev))
    rows = [*CLEAN[: LATE - 1], rival, *CLEAN[LATE - 1 :]]
    report = both(renumber(rows))
    assert report.findings[0].kind == "inserted"


def test_tamperings_far_apart_each_reported_once() -> None:
    """The lane is left at the first, comes back, and is left again at the second."""
    rows = edited(edited(CLEAN, WINDOW + 5), LATE, rehash=True)
    report = both(rows)
    assert len(report.findings) >= 2


def test_truncation_and_checkpoint_findings_in_the_lane() -> None:
    assert both(CLEAN[: L - 30]).findings[0].kind == "removed"
    forged = [SIGNER.sign(cp.size, "f" * 64, cp.size) if cp.size == 250 else cp for cp in CPS]
    report = both(CLEAN, cps=forged)
    assert report.findings[0].kind == "checkpoint"


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_max_findings_stops_at_the_same_record(limit: int) -> None:
    rows = CLEAN
    for seq in (10, WINDOW + 40, LATE, L - 10):
        rows = edited(rows, seq)
    report = both(rows, max_findings=limit)
    assert len(report.findings) == limit


def test_pruned_start() -> None:
    rows = CLEAN[99:]
    report = verify(iter(rows), CPS, KEYS, first_prev_hash=CLEAN[98].hash, first_seq=100)
    slow = verify(
        iter(rows), CPS, KEYS, first_prev_hash=CLEAN[98].hash, first_seq=100, fast_lane=False
    )
    assert report == slow


# --- canonical bytes straight from stored JSON ---------------------------------------------


def _deep() -> dict[str, Any]:
    deep: dict[str, Any] = {"d": 1}
    for _ in range(20):
        deep = {"d": deep}
    return deep


CHANGES: dict[str, dict[str, Any]] = {  # stored JSON keys set to odd values (None: removed)
    "as written": {},
    "extra key": {"extra": 1},
    "missing key": {"status": None},
    "float int": {"bytes_sent": 1024.0},
    "float status": {"status": 200.5},
    "bool int": {"status": True},
    "int text": {"mode": 5},
    "bool text": {"error": False},
    "null action": {"action": None},
    "ranges float": {"ranges": [[0, 1.5]]},
    "ranges bool": {"ranges": [[0, True]]},
    "ranges triple": {"ranges": [[0, 1, 2]]},
    "ranges flat": {"ranges": [0, 1]},
    "ranges empty": {"ranges": []},
    "ranges object": {"ranges": {"a": [0, 1]}},
    "detail float": {"detail": {"x": [1, {"y": 0.5}]}},
    "detail bool": {"detail": {"x": True, "y": [False, None, "s", 3]}},
    "detail list": {"detail": [1, 2]},
    "detail text": {"detail": "x"},
    "detail deep": {"detail": _deep()},
    "huge int": {"bytes_sent": 2**64},
    "negative huge": {"bytes_sent": -(2**63) - 1},
}


def stored_json(rec: AuditRecord, change: str) -> str:
    """``rec``'s stored entry JSON with ``CHANGES[change]`` applied."""
    values = orjson.loads(entry_json(rec.entry))
    for key, value in CHANGES[change].items():
        if value is None and key != "action":
            del values[key]
        else:
            values[key] = value
    return json.dumps(values)  # not orjson: it refuses the out-of-range ints


@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("index", [0, 1, 3])
def test_encoded_matches_the_slow_path_or_declines(change: str, index: int) -> None:
    """Whatever the stored JSON holds, the fast bytes are the slow path's or there are none."""
    row = as_row(CLEAN[index], stored_json(CLEAN[index], change))
    slow = _record_of(*row)
    try:
        slow_bytes: bytes | None = canonical_bytes(slow.seq, slow.entry, slow.prev_hash)
    except (ValueError, TypeError, AttributeError):
        slow_bytes = None
    fast = as_read(row)
    if isinstance(fast, Encoded):
        assert fast.data == slow_bytes
        assert fast.record() == slow
    if change in ("as written", "detail bool", "ranges empty"):
        assert isinstance(fast, Encoded)  # the common shapes take the fast lane
    if change not in ("as written", "detail bool", "ranges empty", "null action"):
        # anything odd takes the slow path ("null action": the action column overrides it)
        assert not isinstance(fast, Encoded)


@pytest.mark.parametrize("change", ["extra key", "float int", "bool int", "int text", "huge int"])
def test_odd_stored_json_after_a_long_clean_run(change: str) -> None:
    """A record whose stored JSON has an extra key, a float, a bool where an int belongs, ...,
    read as the database would return it, gets the slow path's verdict."""
    rows = [as_row(r) for r in CLEAN]
    rows[LATE - 1] = as_row(CLEAN[LATE - 1], stored_json(CLEAN[LATE - 1], change))
    slow = verify(iter([_record_of(*r) for r in rows]), CPS, KEYS, fast_lane=False)
    fast = verify(iter([as_read(r) for r in rows]), CPS, KEYS)
    assert fast == slow
    if change == "extra key":
        assert fast.ok  # the slow path ignores keys that are not fields: so does the lane
    else:
        assert fast.findings[0].seq == LATE


# --- through the database ------------------------------------------------------------------


@pytest.fixture
def long_log(settings: Settings, clock: FixedClock) -> Iterator[Runtime]:
    """A log longer than twice the window, closed (as after a restart)."""
    rt = open_runtime(settings, clock=clock)
    assert rt.audit is not None
    for i in range(2 * WINDOW + 30):
        rt.context.access_log.commit(
            AccessEvent(
                action=Action.MEDIA_PLAYBACK,
                actor=Actor(partner_id="p1", kind="suki_token", token_id=f"jti-{i}"),
                status=206,
                at_ms=int(clock.now() * 1000) + i,
                session_id="s1",
                recording_id=f"r{i % 4}",
                ranges=[(0, i * 100)],
                bytes_sent=i * 100 + 1,
            )
        )
        clock.advance(1)
    rt.close()
    yield rt


@pytest.mark.parametrize(
    "change",
    [
        "none",
        "extra key",
        "float",
        "bool",
        "text column",
        "swap",
    ],
)
def test_store_reads_give_the_same_verdicts(long_log: Runtime, change: str) -> None:
    store = long_log.audit_store
    late = 2 * WINDOW + 5
    with long_log.engine.begin() as conn:
        body = conn.execute(text("SELECT entry FROM audit_log WHERE seq = :s"), {"s": late})
        values = orjson.loads(body.scalar_one())
        if change == "extra key":
            values["note"] = "x"
        elif change == "float":
            values["bytes_sent"] = float(values["bytes_sent"])
        elif change == "bool":
            values["status"] = True
        if change in ("extra key", "float", "bool"):
            conn.execute(
                text("UPDATE audit_log SET entry = :e WHERE seq = :s"),
                {"e": orjson.dumps(values).decode(), "s": late},
            )
        elif change == "text column":
            conn.execute(text("UPDATE audit_log SET session_id = 's2' WHERE seq = :s"), {"s": late})
        elif change == "swap":
            conn.execute(text("UPDATE audit_log SET seq = -1 WHERE seq = :s"), {"s": late})
            conn.execute(
                text("UPDATE audit_log SET seq = :a WHERE seq = :b"), {"a": late, "b": late + 1}
            )
            conn.execute(text("UPDATE audit_log SET seq = :b WHERE seq = -1"), {"b": late + 1})
    slow = verify(store.records(), [], {}, fast_lane=False)
    fast = verify(store.records_to_verify(batch=50), [], {})
    assert fast == slow
    if change in ("none", "extra key"):
        assert fast.ok and fast.records == 2 * WINDOW + 30
    else:
        assert fast.findings[0].seq == late


def test_reading_stops_when_the_verifier_stops(long_log: Runtime) -> None:
    """Stopping early (enough findings) stops the reading thread too (PostgreSQL reads ahead)."""
    reads = long_log.audit_store.records_to_verify(batch=10)
    assert [r.seq for r in itertools.islice(reads, 25)] == list(range(1, 26))
    reads.close()
    assert not [t for t in threading.enumerate() if t.name == "audit-verify-read"]


def test_frontier_roots_are_the_appenders() -> None:
    """The verifier's stack-based tree gives every size's RFC 9162 root, as the stored tree."""
    frontier, appender = merkle.Frontier(), merkle.Appender(0, {}, keep=False)
    assert frontier.root() == appender.root() == merkle.EMPTY_ROOT
    for i in range(130):
        data = f"leaf {i}".encode()
        frontier.append_data(data)
        appender.append(merkle.leaf_hash(data))
        assert frontier.size == appender.size == i + 1
        assert frontier.root() == appender.root()
