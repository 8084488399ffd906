"""The access log's tables: records waiting, the hash chain, the Merkle tree, checkpoints and
the playbacks in progress.

A request's record is made durable by ``write``: plain INSERTs into ``audit_incoming`` (many rows,
one transaction), taking no lock another writer holds (PostgreSQL; SQLite has one write lock, and
writers queue for it on a file lock rather than on its busy handler). The integrator
(``core/integrator.py``; one per deployment, see ``try_role``) moves them into the chain and the
tree with ``integrate``: one transaction that inserts the records, the tree's new nodes, moves
the head with a compare-and-set and deletes what it integrated; so nothing is integrated twice or
lost, whoever dies when.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import fields
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    delete,
    func,
    insert,
    select,
    union_all,
    update,
)

from tapevault.core import merkle
from tapevault.core.audit import AuditEntry, AuditRecord, Encoded, encoded
from tapevault.core.auditlog import LogState, Pending, Query
from tapevault.core.checkpoints import Checkpoint, SignerRecord
from tapevault.core.integrator import IntegrationStep, TreeState
from tapevault.db import outage
from tapevault.db.schema import (
    audit_checkpoints,
    audit_incoming,
    audit_log,
    audit_pending,
    audit_signers,
    audit_state,
    audit_tree,
)
from tapevault.errors import DatabaseUnavailable

# The PostgreSQL advisory lock whose holder is the deployment's integrator ("tvaudit").
ROLE_KEY = 0x7476617564697400
ROLE_CHECK_SECONDS = 1.0  # how often the role's connection is asked whether it still answers

_ENTRY_FIELDS = tuple(f.name for f in fields(AuditEntry))
_ENTRY_FIELD_SET = frozenset(_ENTRY_FIELDS)


def entry_json(entry: AuditEntry) -> str:
    """Every field of the entry as JSON (orjson encodes the dataclass itself, in C)."""
    return orjson.dumps(entry).decode()


def entry_from_json(text: str) -> AuditEntry:
    values = orjson.loads(text)
    ranges = values.get("ranges")
    values["ranges"] = tuple(tuple(r) for r in ranges) if ranges else ()
    if values.keys() == _ENTRY_FIELD_SET:  # as ``entry_json`` wrote it (the integrator's every row)
        return AuditEntry(**values)
    return AuditEntry(**{k: v for k, v in values.items() if k in _ENTRY_FIELD_SET})


class _Depth(threading.local):
    depth = 0


class SqlAuditStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The writer's and the integrator's statements (many a second under load). PostgreSQL:
        # a pool of their own without the pre-ping, which cost a round trip per transaction
        # (BENCHMARKS.md, issue 14); a connection the server dropped meanwhile fails its first
        # statement instead, is invalidated with the pool's other idle ones, and ``write``
        # tries once more on a fresh one. Made at the first write (a reading command never
        # needs it). SQLite: the same engine (no round trips to save).
        self._busy_engine: Engine | None = None if engine.dialect.name == "postgresql" else engine
        self._busy_lock = threading.Lock()
        # SQLite: writers of several processes (TAPEVAULT_PROCESSES, the CLI) queue on a file
        # lock rather than on SQLite's busy handler, which polls with sleeps of up to 100 ms and
        # made appends under load wait seconds. PostgreSQL's row lock already queues fairly.
        self._lock_path: str | None = None
        if engine.dialect.name == "sqlite" and engine.url.database:
            self._lock_path = f"{engine.url.database}.audit-lock"
        self._held = _Depth()
        # The integrator's role while this process holds it: PostgreSQL, the connection that
        # holds the advisory lock; SQLite, the descriptor of the locked file (-1: in memory).
        self._role: Connection | int | None = None
        self._role_path: str | None = None
        self._role_checked = -1e9  # monotonic time the role's connection last answered
        if self._lock_path is not None:
            self._role_path = f"{engine.url.database}.audit-integrator"
        mark = self._mark = "?" if engine.dialect.name == "sqlite" else "%s"
        columns = ", ".join(ROW_COLUMNS)
        # Fixed statements: the only interpolations are column names and placeholders.
        self._sql = {
            "lock": ("UPDATE audit_state SET id = 1 WHERE id = 1 RETURNING head_seq, head_hash"),
            "append": f"INSERT INTO audit_incoming (entry) VALUES ({mark})",  # noqa: S608
            "incoming": f"SELECT id, entry FROM audit_incoming ORDER BY id LIMIT {mark}",  # noqa: S608
            "node": f"INSERT INTO audit_tree (level, idx, hash) VALUES ({mark}, {mark}, {mark})",  # noqa: S608
            "signer": (
                "INSERT INTO audit_signers (key_id, vkey, node, first_ms) "  # noqa: S608
                f"VALUES ({mark}, {mark}, {mark}, {mark}) ON CONFLICT (key_id) DO NOTHING"
            ),
            "insert": (
                f"INSERT INTO audit_log ({columns}) "  # noqa: S608
                f"VALUES ({', '.join(mark for _ in ROW_COLUMNS)})"
            ),
        }

    @property
    def _busy(self) -> Engine:
        engine = self._busy_engine
        if engine is None:
            with self._busy_lock:
                engine = self._busy_engine
                if engine is None:
                    engine = self._busy_engine = outage.install(
                        create_engine(
                            self.engine.url, pool_size=2, max_overflow=4, pool_pre_ping=False
                        )
                    )
        return engine

    # --- writing (the request's path) -----------------------------------------------------------

    def write(
        self,
        entries: Sequence[AuditEntry],
        *,
        opened: Sequence[Pending] = (),
        updated: Sequence[Pending] = (),
        closed: Sequence[str] = (),
    ) -> None:
        """One transaction: open, update and close playbacks, and make ``entries`` (a sealed
        playback's record among them) durable in ``audit_incoming``. All of it happens, or none.
        No seq, no hash, no shared row: the integrator sequences them a moment later."""
        committing: list[bool] = []
        try:
            self._write(entries, opened, updated, closed, committing)
        except DatabaseUnavailable:
            if committing or self._busy is self.engine:
                raise  # the commit's outcome is unknown: never twice; or SQLite: no pool to renew
            # The first statement met a connection the server had dropped (a restart, an idle
            # timeout): the pool has let it go; once more, on a fresh one.
            self._write(entries, opened, updated, closed, [])

    def _write(
        self,
        entries: Sequence[AuditEntry],
        opened: Sequence[Pending],
        updated: Sequence[Pending],
        closed: Sequence[str],
        committing: list[bool],
    ) -> None:
        # Each kind of change is one executemany: a batch opens (and refreshes) the pending
        # records of many playbacks at once, and each open is a request waiting for its first byte.
        with self._serialised(), self._busy.begin() as conn:
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
            if entries:
                # One driver-level executemany: through SQLAlchemy's statement machinery the
                # same insert cost ~3x more per record (this is every audited request's cost).
                conn.exec_driver_sql(self._sql["append"], [(entry_json(e),) for e in entries])
            committing.append(True)  # every statement went through: what fails now is the commit

    # --- integrating (one integrator per deployment, off the request's path) --------------------

    def incoming(self, limit: int) -> list[tuple[int, AuditEntry, str]]:
        """The oldest ``limit`` records waiting to be integrated, in id order, each with the
        JSON it was stored as (written again into ``audit_log`` as is: no second encoding)."""
        with self._busy.connect() as conn:
            rows = conn.exec_driver_sql(self._sql["incoming"], (int(limit),)).all()
        out = []
        for row_id, text in rows:
            try:
                entry = entry_from_json(text)
            except (orjson.JSONDecodeError, TypeError, ValueError):
                # Only tapevault writes these rows; one it cannot read was damaged in the
                # database. Integrate what it says, marked, rather than block the log behind it.
                entry = AuditEntry(
                    at_ms=0,
                    action="audit.damaged",
                    status=0,
                    detail={"unreadable_entry": str(text)[:200]},
                )
                text = entry_json(entry)
            out.append((int(row_id), entry, text))
        return out

    def waiting(self) -> tuple[int, int | None]:
        """How many records wait to be integrated, and the highest id among them."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(func.count(), func.max(audit_incoming.c.id)).select_from(audit_incoming)
            ).one()
        return int(row[0]), None if row[1] is None else int(row[1])

    def waiting_mark(self) -> int | None:
        """The highest id waiting to be integrated (one index probe, however many wait)."""
        with self._busy.connect() as conn:
            value = conn.execute(select(func.max(audit_incoming.c.id))).scalar()
        return None if value is None else int(value)

    def waiting_through(self, mark: int) -> bool:
        """Whether a record with an id up to ``mark`` still waits to be integrated."""
        with self._busy.connect() as conn:
            row = conn.execute(
                select(audit_incoming.c.id).where(audit_incoming.c.id <= mark).limit(1)
            ).first()
        return row is not None

    def tree_state(self) -> TreeState:
        """The head, the tree's extent and its right edge (the nodes a next leaf may need)."""
        with self._busy.connect() as conn:
            row = conn.execute(select(audit_state).where(audit_state.c.id == 1)).one()
            edge = self._nodes(conn, set(merkle.root_nodes(int(row.tree_size))))
        return TreeState(
            int(row.head_seq),
            row.head_hash,
            int(row.tree_first_seq),
            int(row.tree_size),
            edge,
            int(row.first_seq),
            row.first_prev_hash,
        )

    def integrate(self, step: IntegrationStep) -> bool:
        """Apply one integration step in one transaction: the records into the log, the tree's
        new nodes, the head moved, the integrated rows deleted from ``audit_incoming``. False
        (and nothing changed) when the head or the tree is no longer where the step started:
        another integrator moved it (the role lock makes that rare; this makes it harmless)."""
        with self._serialised(), self._busy.begin() as conn:
            moved = conn.execute(
                update(audit_state)
                .where(
                    audit_state.c.id == 1,
                    audit_state.c.head_seq == step.from_seq,
                    audit_state.c.tree_size == step.from_tree,
                )
                .values(head_seq=step.head_seq, head_hash=step.head_hash, tree_size=step.tree_size)
            ).rowcount
            if moved != 1:
                conn.rollback()
                return False
            # Driver-level statements: through SQLAlchemy's per-row parameter processing the
            # integrator cost several times more per record (it shares the GIL with requests).
            if step.records:
                texts = step.texts or [None] * len(step.records)
                conn.exec_driver_sql(
                    self._sql["insert"],
                    [_row(r, t) for r, t in zip(step.records, texts, strict=True)],
                )
            if step.nodes:
                conn.exec_driver_sql(self._sql["node"], list(step.nodes))
            if step.ids:
                gone = 0
                for chunk in _chunks(step.ids, 500):
                    marks = ", ".join(self._mark for _ in chunk)
                    gone += conn.exec_driver_sql(
                        f"DELETE FROM audit_incoming WHERE id IN ({marks})",  # noqa: S608
                        tuple(chunk),
                    ).rowcount
                if gone != len(step.ids):
                    conn.rollback()  # someone else integrated (some of) them: never twice
                    return False
        return True

    def tree_nodes(self, nodes: set[merkle.Node]) -> dict[merkle.Node, bytes]:
        with self.engine.connect() as conn:
            return self._nodes(conn, nodes)

    @staticmethod
    def _nodes(conn: Connection, nodes: set[merkle.Node]) -> dict[merkle.Node, bytes]:
        found: dict[merkle.Node, bytes] = {}
        by_level: dict[int, list[int]] = {}
        for level, idx in nodes:
            by_level.setdefault(level, []).append(idx)
        for level, idxs in by_level.items():
            for chunk in _chunks(idxs, 500):
                rows = conn.execute(
                    select(audit_tree.c.idx, audit_tree.c.hash).where(
                        audit_tree.c.level == level, audit_tree.c.idx.in_(chunk)
                    )
                ).all()
                found.update(((level, int(r.idx)), bytes(r.hash)) for r in rows)
        return found

    def records_between(self, first: int, last: int) -> list[AuditRecord]:
        """Records ``first`` to ``last`` (seq), in order (the tree's backfill reads a chunk)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(audit_log)
                .where(audit_log.c.seq >= first, audit_log.c.seq <= last)
                .order_by(audit_log.c.seq)
            ).all()
        return [_record(row) for row in rows]

    def record(self, seq: int) -> AuditRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(audit_log).where(audit_log.c.seq == seq)).first()
        return None if row is None else _record(row)

    def checkpoint_at(self, size: int) -> Checkpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(audit_checkpoints).where(audit_checkpoints.c.size == size)
            ).first()
        return None if row is None else _checkpoint(row)

    def last_tree_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint with a signed tree note."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(audit_checkpoints)
                .where(audit_checkpoints.c.note_signature.is_not(None))
                .order_by(audit_checkpoints.c.size.desc())
                .limit(1)
            ).first()
        return None if row is None else _checkpoint(row)

    # --- the integrator's role (one holder per deployment) --------------------------------------

    def try_role(self) -> bool:
        """Take the integrator's role if nobody holds it (never waits). PostgreSQL: a session
        advisory lock on a connection kept for as long as the role is held (it goes with the
        connection, so a process that dies lets go); SQLite: an ``flock`` on a file beside the
        database (the kernel lets go when the process dies)."""
        if self._role is not None:
            return True
        if self.engine.dialect.name == "postgresql":
            conn = self.engine.connect()
            try:
                got = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({ROLE_KEY})").scalar()
                conn.commit()
            except Exception:
                conn.close()
                raise
            if not got:
                conn.close()
                return False
            self._role = conn
            return True
        if self._role_path is None:  # an in-memory database: one process, always the one
            self._role = -1
            return True
        fd = os.open(self._role_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._role = fd
        return True

    def holds_role(self) -> bool:
        """Whether the role is still ours (PostgreSQL: its connection still answers)."""
        role = self._role
        if role is None:
            return False
        if isinstance(role, Connection):
            # Asked every integrator tick: a round trip at most once a second (a lost
            # connection is noticed a second late; two integrators at once change nothing, as
            # ``integrate`` compares and sets).
            now = time.monotonic()
            if now - self._role_checked < ROLE_CHECK_SECONDS:
                return True
            try:
                role.exec_driver_sql("SELECT 1").scalar()
                role.commit()
                self._role_checked = now
            except Exception:
                self.release_role()
                return False
        return True

    def close(self) -> None:
        """Close the writer's own pool (PostgreSQL); the shared engine is its owner's."""
        engine = self._busy_engine
        if engine is not None and engine is not self.engine:
            self._busy_engine = None  # made again if written to after all
            engine.dispose()

    def release_role(self) -> None:
        role, self._role = self._role, None
        self._role_checked = -1e9
        if isinstance(role, Connection):
            with contextlib.suppress(Exception):  # a dead connection has let go already
                role.exec_driver_sql(f"SELECT pg_advisory_unlock({ROLE_KEY})")
                role.commit()
            with contextlib.suppress(Exception):
                role.invalidate()  # never back into the pool with a lock on it
                role.close()
        elif isinstance(role, int) and role >= 0:
            os.close(role)

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
                        tree_size=checkpoint.tree_size,
                        root_hash=checkpoint.root_hash,
                        note_signature=checkpoint.note_signature,
                    )
                )

    def add_signer(self, signer: SignerRecord) -> None:
        # Nodes sharing a key file may list it at once: the second insert is a no-op, and a key
        # listed before keeps its first node and time.
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                self._sql["signer"],
                (signer.key_id, signer.vkey, signer.node, signer.first_ms),
            )

    def signers(self, limit: int = 10_000) -> list[SignerRecord]:
        """The keys listed as checkpoint signers, in the order they were listed: at most
        ``limit`` + 1 (a table flooded by someone who writes the database is not read whole)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(audit_signers)
                .order_by(audit_signers.c.first_ms, audit_signers.c.key_id)
                .limit(limit + 1)
            ).all()
        return [
            SignerRecord(_text(r.key_id), _text(r.vkey), _node(r.node), _ms(r.first_ms))
            for r in rows
        ]

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
        for rows in self._row_batches(batch):
            for row in rows:
                yield _record_of(*row)

    def records_to_verify(self, batch: int = 2000) -> Iterator[AuditRecord | Encoded]:
        """``records``, but a row whose canonical bytes follow straight from its stored JSON
        comes as ``Encoded`` (bytes computed, no ``AuditEntry`` built): what verification
        needs for nearly every row, at a fraction of the cost. Any other row (an extra or
        missing key, a value of another type, unreadable JSON) comes as ``_record_of`` builds
        it, exactly as ``records`` gives it.

        PostgreSQL: the next batch is read by a thread while this one is processed (the server
        works and the driver waits without the GIL); at most two batches are held, memory stays
        flat. Not SQLite: its work is in this process anyway, and an in-memory database is one
        per thread."""
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        batches = self._row_batches(batch)
        if self.engine.dialect.name == "postgresql":
            batches = _prefetched(batches)
        for rows in batches:
            for row in rows:
                seq, at_ms, tenant, action, actor, session, recording, text, prev, digest = row
                try:
                    values = loads(text)
                except decode_error:
                    values = None
                fast = None
                if type(values) is dict:
                    # The filterable fields come from their columns, as in ``_record_of``.
                    values["at_ms"] = at_ms
                    values["tenant_id"] = tenant
                    values["action"] = action
                    values["actor_id"] = actor
                    values["session_id"] = session
                    values["recording_id"] = recording
                    fast = encoded(seq, prev, digest, values)
                yield _record_of(*row) if fast is None else fast

    def _row_batches(self, batch: int) -> Iterator[Sequence[Any]]:
        """Every row of ``audit_log`` in ``seq`` order (``ROW_COLUMNS``), ``batch`` at a time."""
        # The driver's own cursor and plain tuples: verification reads every record, and
        # SQLAlchemy's rows cost it a fifth of its time (BENCHMARKS.md, issue 14 part 6).
        after: int | None = None
        mark = self._mark
        columns = ", ".join(ROW_COLUMNS)
        first = f"SELECT {columns} FROM audit_log ORDER BY seq LIMIT {mark}"  # noqa: S608
        more = f"SELECT {columns} FROM audit_log WHERE seq > {mark} ORDER BY seq LIMIT {mark}"  # noqa: S608
        while True:
            with self.engine.connect() as conn:
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                try:
                    if after is None:
                        cursor.execute(first, (batch,))
                    else:
                        cursor.execute(more, (after, batch))
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
            if not rows:
                return
            yield rows
            after = rows[-1][0]

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
                yield _checkpoint(r)
            if len(rows) < batch:
                return
            after = rows[-1].size

    def checkpoints(self) -> list[Checkpoint]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.size)).all()
        return [_checkpoint(r) for r in rows]

    def last_checkpoint(self) -> Checkpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(audit_checkpoints).order_by(audit_checkpoints.c.size.desc()).limit(1)
            ).first()
        return None if row is None else _checkpoint(row)

    def hash_at(self, seq: int) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == seq)).scalar()
        return None if value is None else str(value)

    def query(self, q: Query) -> list[AuditRecord]:
        conditions: list[Any] = [audit_log.c.seq > q.after_seq]
        history = q.history and q.session_id is not None and q.recording_id is not None
        if q.tenant_id is not None:
            # A history is found by its ids; the tenant is only checked (its index would walk
            # every record of the tenant: an expression keeps the planners off it).
            tenant = func.coalesce(audit_log.c.tenant_id, "") if history else audit_log.c.tenant_id
            conditions.append(tenant == q.tenant_id)
        ids = [(audit_log.c.session_id, q.session_id), (audit_log.c.recording_id, q.recording_id)]
        if history:
            ids = []
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
        if history:
            # The recording's records and its session's records without a recording: the first
            # page of each, in seq order from its own index (migration 0024), merged.
            own = _page(conditions, audit_log.c.recording_id == q.recording_id, q.limit)
            around = _page(
                conditions,
                and_(audit_log.c.session_id == q.session_id, audit_log.c.recording_id.is_(None)),
                q.limit,
            )
            both = union_all(select(own), select(around)).subquery()
            query = select(both).order_by(both.c.seq).limit(q.limit)
        else:
            query = select(audit_log).where(*conditions).order_by(audit_log.c.seq).limit(q.limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_record(row) for row in rows]

    def pending(self) -> list[Pending]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(audit_pending)).all()
        return [
            Pending(r.playback_id, r.owner, entry_from_json(r.entry), r.opened_ms, r.updated_ms)
            for r in rows
        ]


def _page(conditions: list[Any], which: Any, limit: int) -> Any:
    return (
        select(audit_log)
        .where(*conditions, which)
        .order_by(audit_log.c.seq)
        .limit(limit)
        .subquery()
    )


_REFRESH = (
    update(audit_pending)
    .where(audit_pending.c.playback_id == bindparam("p_id"))
    .values(entry=bindparam("p_entry"), updated_ms=bindparam("p_ms"))
)


def _checkpoint(r: Any) -> Checkpoint:
    return Checkpoint(
        r.size,
        r.head_hash,
        r.at_ms,
        r.key_id,
        r.signature,
        None if r.tree_size is None else int(r.tree_size),
        r.root_hash,
        r.note_signature,
    )


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for at in range(0, len(items), size):
        yield items[at : at + size]


def _pending_values(pending: Pending) -> dict[str, Any]:
    return {
        "playback_id": pending.playback_id,
        "owner": pending.owner,
        "entry": entry_json(pending.entry),
        "opened_ms": pending.opened_ms,
        "updated_ms": pending.updated_ms,
    }


ROW_COLUMNS = (
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


def _row(record: AuditRecord, text: str | None = None) -> tuple[Any, ...]:
    """The record as a row, in ``ROW_COLUMNS`` order (``text``: its entry's JSON, if known)."""
    e = record.entry
    return (
        record.seq,
        e.at_ms,
        e.tenant_id,
        e.action,
        e.actor_id,
        e.session_id,
        e.recording_id,
        text if text is not None else entry_json(e),
        record.prev_hash,
        record.hash,
    )


def _record(row: Any) -> AuditRecord:
    """A stored row as a record: the entry from its JSON, but the filterable fields from their
    columns, so that a column edited to hide a record from queries fails verification too."""
    return _record_of(
        row.seq,
        row.at_ms,
        row.tenant_id,
        row.action,
        row.actor_id,
        row.session_id,
        row.recording_id,
        row.entry,
        row.prev_hash,
        row.hash,
    )


def _record_of(
    seq: Any,
    at_ms: Any,
    tenant_id: Any,
    action: Any,
    actor_id: Any,
    session_id: Any,
    recording_id: Any,
    entry: Any,
    prev_hash: Any,
    hash_: Any,
) -> AuditRecord:
    """``_record`` from the columns in ``ROW_COLUMNS`` order (a plain tuple row)."""
    try:
        values = orjson.loads(entry)
    except orjson.JSONDecodeError:
        values = {"detail": {"unreadable_entry": entry[:200]}}
    if not isinstance(values, dict):
        values = {"detail": {"unreadable_entry": str(values)[:200]}}
    values.update(
        at_ms=at_ms,
        tenant_id=tenant_id,
        action=action,
        actor_id=actor_id,
        session_id=session_id,
        recording_id=recording_id,
    )
    ranges = values.get("ranges") or ()
    values["ranges"] = tuple(tuple(r) if isinstance(r, list) else r for r in ranges)
    if values.keys() == _ENTRY_FIELD_SET:  # as entry_json wrote it: every field, no other
        return AuditRecord(seq, AuditEntry(**values), prev_hash, hash_)
    values.setdefault("status", 0)
    fields = {k: v for k, v in values.items() if k in _ENTRY_FIELDS}
    return AuditRecord(seq, AuditEntry(**fields), prev_hash, hash_)


def _text(value: object) -> str:
    """A signer row's text column as text: SQLite keeps whatever a hand-written row put there
    (a blob, a number), which verify then reports as a row that does not hold together."""
    return value if isinstance(value, str) else repr(value)


def _node(value: object) -> str | None:
    return None if value is None else _text(value)


def _ms(value: object) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return -1  # not a time: only shown, as "at_ms -1"


_DONE = object()


def _prefetched(batches: Iterator[Sequence[Any]]) -> Iterator[Sequence[Any]]:
    """``batches``, each read by a thread while the caller works on the one before (a queue of
    one: at most one batch waits). The thread stops when the caller stops early; an error while
    reading is raised in the caller."""
    ready: queue.Queue[object] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for rows in batches:
                if not offer(rows):
                    return
            offer(_DONE)
        except BaseException as exc:
            offer(exc)

    reader = threading.Thread(target=read, name="audit-verify-read", daemon=True)
    reader.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        reader.join()
