"""The access log's tables: the hash chain, its checkpoints and the playbacks in progress.

Appends are serialised by the single ``audit_state`` row: every writing transaction first updates
it (a row lock on PostgreSQL, the write lock on SQLite), then reads the head, chains its entries
onto it and moves the head. So several processes (servers, workers, the CLI) append to one chain
without ever forking it, and each batch costs one transaction, however many records it holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import fields
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, and_, bindparam, delete, insert, or_, select, update

from tapevault.core.audit import AuditEntry, AuditRecord, chain
from tapevault.core.auditlog import LogState, Pending, Query
from tapevault.core.checkpoints import Checkpoint
from tapevault.db.schema import audit_checkpoints, audit_log, audit_pending, audit_state

_ENTRY_FIELDS = tuple(f.name for f in fields(AuditEntry))


def entry_json(entry: AuditEntry) -> str:
    """Every field of the entry as JSON (orjson encodes the dataclass itself, in C)."""
    return orjson.dumps(entry).decode()


def entry_from_json(text: str) -> AuditEntry:
    values = orjson.loads(text)
    values["ranges"] = tuple(tuple(r) for r in values.get("ranges") or ())
    return AuditEntry(**{k: v for k, v in values.items() if k in _ENTRY_FIELDS})


class _Depth(threading.local):
    depth = 0


class SqlAuditStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite: writers of several processes (TAPEVAULT_PROCESSES, the CLI) queue on a file
        # lock rather than on SQLite's busy handler, which polls with sleeps of up to 100 ms and
        # made appends under load wait seconds. PostgreSQL's row lock already queues fairly.
        self._lock_path: str | None = None
        if engine.dialect.name == "sqlite" and engine.url.database:
            self._lock_path = f"{engine.url.database}.audit-lock"
        self._held = _Depth()
        mark = "?" if engine.dialect.name == "sqlite" else "%s"
        columns = ", ".join(_ROW_COLUMNS)
        # Fixed statements: the only interpolations are column names and placeholders.
        self._sql = {
            "lock": ("UPDATE audit_state SET id = 1 WHERE id = 1 RETURNING head_seq, head_hash"),
            "insert": (
                f"INSERT INTO audit_log ({columns}) "  # noqa: S608
                f"VALUES ({', '.join(mark for _ in _ROW_COLUMNS)})"
            ),
            "head": f"UPDATE audit_state SET head_seq = {mark}, head_hash = {mark} WHERE id = 1",  # noqa: S608
        }

    # --- writing ----------------------------------------------------------------------------

    def write(
        self,
        entries: Sequence[AuditEntry],
        *,
        opened: Sequence[Pending] = (),
        updated: Sequence[Pending] = (),
        closed: Sequence[str] = (),
    ) -> list[AuditRecord]:
        """One transaction: open, update and close playbacks, and append ``entries`` (a sealed
        playback's record among them) to the chain. All of it happens, or none."""
        # Each kind of change is one executemany: a batch opens (and refreshes) the pending
        # records of many playbacks at once, and each open is a request waiting for its first byte.
        with self._serialised(), self.engine.begin() as conn:
            if opened:
                conn.execute(insert(audit_pending), [_pending_values(p) for p in opened])
            if updated:
                # Only these change: the owner and opening time are fixed when a playback opens.
                conn.execute(
                    _REFRESH,
                    [
                        {
                            "p_id": p.playback_id,
                            "p_entry": entry_json(p.entry),
                            "p_ms": p.updated_ms,
                        }
                        for p in updated
                    ],
                )
            if closed:
                conn.execute(delete(audit_pending).where(audit_pending.c.playback_id.in_(closed)))
            return self._append(conn, entries) if entries else []

    def _append(self, conn: Connection, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        # The UPDATE takes the lock (row lock / SQLite's write lock) and returns the head read
        # under it. The rows go in as one driver-level executemany: through SQLAlchemy's
        # statement machinery the same insert cost ~3x more per record (this is the hot path of
        # every audited request).
        head = conn.exec_driver_sql(self._sql["lock"]).one()
        records = chain(entries, prev_hash=head[1], first_seq=head[0] + 1)
        conn.exec_driver_sql(self._sql["insert"], [_row(r) for r in records])
        last = records[-1]
        conn.exec_driver_sql(self._sql["head"], (last.seq, last.hash))
        return records

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the writers' file lock (SQLite; nothing to do on PostgreSQL). Re-entrant within
        a thread, so ``write`` inside a held cycle does not wait for itself."""
        if self._lock_path is None or self._held.depth:
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        # Opening can fail (EMFILE when connections exhaust the process's files, EPERM on an
        # immutable file): the OSError reaches the writer, which answers 503 and tries again.
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held.depth = 1
            yield
        finally:
            self._held.depth = 0
            os.close(fd)  # closing releases the lock

    _serialised = exclusive

    def probe(self) -> None:
        """Take the append lock and rewrite the head unchanged, in a transaction: what a
        failing log tries to know whether appends work again (the database writable, the lock
        file openable), without adding a record."""
        with self._serialised(), self.engine.begin() as conn:
            conn.exec_driver_sql(self._sql["lock"]).one()

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(audit_checkpoints.c.size).where(audit_checkpoints.c.size == checkpoint.size)
            ).first()
            if exists is None:
                conn.execute(
                    insert(audit_checkpoints).values(
                        size=checkpoint.size,
                        head_hash=checkpoint.head_hash,
                        at_ms=checkpoint.at_ms,
                        key_id=checkpoint.key_id,
                        signature=checkpoint.signature,
                    )
                )

    def prune(self, before_ms: int) -> int:
        """Drop records older than ``before_ms`` (the audit log's own retention), keeping the
        chain verifiable: the cut is made at a checkpoint whose records are all old enough, that
        checkpoint is kept, and the state remembers where the kept part starts and the hash it
        links to, which the kept checkpoint's signature vouches for."""
        with self._serialised(), self.engine.begin() as conn:
            conn.execute(update(audit_state).where(audit_state.c.id == 1).values(id=1))
            cut = conn.execute(
                select(audit_checkpoints.c.size, audit_checkpoints.c.head_hash)
                .join(audit_log, audit_log.c.seq == audit_checkpoints.c.size)
                .where(audit_log.c.at_ms < before_ms)
                .order_by(audit_checkpoints.c.size.desc())
                .limit(1)
            ).first()
            if cut is None:
                return 0
            removed = conn.execute(delete(audit_log).where(audit_log.c.seq <= cut.size)).rowcount
            conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.size < cut.size))
            conn.execute(
                update(audit_state)
                .where(audit_state.c.id == 1)
                .values(first_seq=cut.size + 1, first_prev_hash=cut.head_hash)
            )
        return int(removed)

    # --- reading ----------------------------------------------------------------------------

    def state(self) -> LogState:
        with self.engine.connect() as conn:
            row = conn.execute(select(audit_state).where(audit_state.c.id == 1)).one()
        return LogState(row.first_seq, row.first_prev_hash, row.head_seq, row.head_hash)

    def records(self, batch: int = 2000) -> Iterator[AuditRecord]:
        """Every record in ``seq`` order, read in batches (bounded memory for verification)."""
        after: int | None = None
        while True:
            query = select(audit_log).order_by(audit_log.c.seq).limit(batch)
            if after is not None:
                query = query.where(audit_log.c.seq > after)
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            for row in rows:
                yield _record(row)
            after = rows[-1].seq

    def iter_checkpoints(self, batch: int = 2000) -> Iterator[Checkpoint]:
        """Every checkpoint in size order, read in batches (bounded memory for verification)."""
        after = -1
        while True:
            query = (
                select(audit_checkpoints)
                .where(audit_checkpoints.c.size > after)
                .order_by(audit_checkpoints.c.size)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            for r in rows:
                yield Checkpoint(r.size, r.head_hash, r.at_ms, r.key_id, r.signature)
            if len(rows) < batch:
                return
            after = rows[-1].size

    def checkpoints(self) -> list[Checkpoint]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.size)).all()
        return [Checkpoint(r.size, r.head_hash, r.at_ms, r.key_id, r.signature) for r in rows]

    def last_checkpoint(self) -> Checkpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(audit_checkpoints).order_by(audit_checkpoints.c.size.desc()).limit(1)
            ).first()
        return None if row is None else Checkpoint(*row)

    def hash_at(self, seq: int) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == seq)).scalar()
        return None if value is None else str(value)

    def query(self, q: Query) -> list[AuditRecord]:
        conditions: list[Any] = [audit_log.c.seq > q.after_seq]
        if q.tenant_id is not None:
            conditions.append(audit_log.c.tenant_id == q.tenant_id)
        ids = [(audit_log.c.session_id, q.session_id), (audit_log.c.recording_id, q.recording_id)]
        if q.history and q.session_id is not None and q.recording_id is not None:
            ids = []
            conditions.append(
                or_(
                    audit_log.c.recording_id == q.recording_id,
                    and_(
                        audit_log.c.session_id == q.session_id,
                        audit_log.c.recording_id.is_(None),
                    ),
                )
            )
        for column, value in (
            *ids,
            (audit_log.c.actor_id, q.actor_id),
            (audit_log.c.action, q.action),
        ):
            if value is not None:
                conditions.append(column == value)
        if q.since_ms is not None:
            conditions.append(audit_log.c.at_ms >= q.since_ms)
        if q.until_ms is not None:
            conditions.append(audit_log.c.at_ms < q.until_ms)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(audit_log).where(*conditions).order_by(audit_log.c.seq).limit(q.limit)
            ).all()
        return [_record(row) for row in rows]

    def pending(self) -> list[Pending]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(audit_pending)).all()
        return [
            Pending(r.playback_id, r.owner, entry_from_json(r.entry), r.opened_ms, r.updated_ms)
            for r in rows
        ]


_REFRESH = (
    update(audit_pending)
    .where(audit_pending.c.playback_id == bindparam("p_id"))
    .values(entry=bindparam("p_entry"), updated_ms=bindparam("p_ms"))
)


def _pending_values(pending: Pending) -> dict[str, Any]:
    return {
        "playback_id": pending.playback_id,
        "owner": pending.owner,
        "entry": entry_json(pending.entry),
        "opened_ms": pending.opened_ms,
        "updated_ms": pending.updated_ms,
    }


_ROW_COLUMNS = (
    "seq",
    "at_ms",
    "tenant_id",
    "action",
    "actor_id",
    "session_id",
    "recording_id",
    "entry",
    "prev_hash",
    "hash",
)


def _row(record: AuditRecord) -> tuple[Any, ...]:
    """The record as a row, in ``_ROW_COLUMNS`` order."""
    e = record.entry
    return (
        record.seq,
        e.at_ms,
        e.tenant_id,
        e.action,
        e.actor_id,
        e.session_id,
        e.recording_id,
        entry_json(e),
        record.prev_hash,
        record.hash,
    )


def _record(row: Any) -> AuditRecord:
    """A stored row as a record: the entry from its JSON, but the filterable fields from their
    columns, so that a column edited to hide a record from queries fails verification too."""
    try:
        values = orjson.loads(row.entry)
    except orjson.JSONDecodeError:
        values = {"detail": {"unreadable_entry": row.entry[:200]}}
    if not isinstance(values, dict):
        values = {"detail": {"unreadable_entry": str(values)[:200]}}
    values.update(
        at_ms=row.at_ms,
        tenant_id=row.tenant_id,
        action=row.action,
        actor_id=row.actor_id,
        session_id=row.session_id,
        recording_id=row.recording_id,
    )
    ranges = values.get("ranges") or ()
    values["ranges"] = tuple(tuple(r) if isinstance(r, list) else r for r in ranges)
    values.setdefault("status", 0)
    fields = {k: v for k, v in values.items() if k in _ENTRY_FIELDS}
    return AuditRecord(row.seq, AuditEntry(**fields), row.prev_hash, row.hash)
