"""Point reads for the request hot path, on plain DBAPI connections.

Measured on the 2-core machine: the session + recordings lookup behind every recording-URL request
costs ~26 µs through the sqlite3 module and ~150-200 µs through SQLAlchemy Core (statement
execution, result wrapping and pool checkout). The schema and every write stay in SQLAlchemy and
Alembic; only these few SELECTs, whose SQL is portable, run raw. Connections are autocommit, so a
read never holds a transaction open, and they are pooled (at most ``max_connections``) because
PostgreSQL calls arrive from a thread pool.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Engine, Table

from tapevault import inline
from tapevault.db import outage
from tapevault.db.schema import api_keys, partners, recordings, sessions


def _columns(table: Table, alias: str | None = None) -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + column.name for column in table.columns)


SESSION_WIDTH = len(sessions.columns)


def storable(values: Sequence[Any]) -> bool:
    """False when a text value holds NUL: PostgreSQL's text type cannot store or compare it
    (the query would fail), and nothing tapevault stores contains one."""
    return not any(isinstance(v, str) and "\x00" in v for v in values)


class FastReader:
    """Runs a handful of fixed SELECTs with minimal overhead."""

    def __init__(self, engine: Engine, max_connections: int = 8) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max_connections)
        marker = "?" if self._sqlite else "%s"
        self.sql = {
            name: text.replace("?", marker)
            for name, text in {
                "partner": f"SELECT {_columns(partners)} FROM partners WHERE partner_id = ?",
                "tenant_by_workspace": (
                    f"SELECT {_columns(partners)} FROM partners WHERE workspace_id = ?"
                ),
                "tenant_by_kore_client": (
                    f"SELECT {_columns(partners)} FROM partners WHERE kore_client_id = ?"
                ),
                "api_key_by_hash": f"SELECT {_columns(api_keys)} FROM api_keys WHERE key_hash = ?",
                "session_by_external": (
                    f"SELECT {_columns(sessions)} FROM sessions "
                    "WHERE external_id = ? AND partner_id = ?"
                ),
                "epoch": "SELECT epoch FROM cache_epoch WHERE id = 1",
                "merged": (
                    f"SELECT {_columns(recordings)} FROM recordings "
                    "WHERE session_id = ? AND partner_id = ? AND sequence_number = 0"
                ),
                "session": (
                    f"SELECT {_columns(sessions)} FROM sessions "
                    "WHERE session_id = ? AND partner_id = ?"
                ),
                # One statement, so SQLite opens one WAL read transaction, not two.
                "session_recordings": (
                    f"SELECT {_columns(sessions, 's')}, {_columns(recordings, 'r')} "
                    "FROM sessions s LEFT JOIN recordings r ON r.session_id = s.session_id "
                    # sequence 0 is the derived merged rendition, never one of the session's own
                    "AND r.partner_id = s.partner_id AND r.sequence_number > 0 "
                    "WHERE s.session_id = ? AND s.partner_id = ? ORDER BY r.sequence_number"
                ),
                "recording": (
                    f"SELECT {_columns(recordings)} FROM recordings WHERE recording_id = ?"
                ),
                # Live streams' fencing check, once per group commit (ingest/durable.py).
                "streams_held": (
                    "SELECT recording_id FROM recordings WHERE status = ? AND writer_id = ?"
                ),
            }.items()
        }

    def _connect(self) -> Any:
        cargs, cparams = self._engine.dialect.create_connect_args(self._engine.url)
        connection = self._engine.dialect.connect(*cargs, **cparams)
        if self._sqlite:
            connection.isolation_level = None  # autocommit: SELECTs open no transaction
            connection.execute("PRAGMA busy_timeout=5000")
            connection.execute("PRAGMA query_only=ON")
        else:
            connection.autocommit = True
        return connection

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        inline.check()  # not on the event loop's database-free attempt (tapevault/inline.py)
        with outage.translated(self._engine.dialect.loaded_dbapi), self._pooled() as connection:
            yield connection

    @contextlib.contextmanager
    def _pooled(self) -> Iterator[Any]:
        self._slots.acquire()
        try:
            try:
                connection = self._idle.get_nowait()
            except queue.Empty:
                connection = self._connect()
            try:
                yield connection
            except BaseException:
                # A connection that failed mid-query may be broken; never hand it out again.
                with contextlib.suppress(Exception):
                    connection.close()
                raise
            self._idle.put(connection)
        finally:
            self._slots.release()

    def one(self, name: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        if not storable(params):
            return None  # no stored id holds a NUL, and PostgreSQL refuses to even compare one
        with self._connection() as connection:
            cursor = connection.cursor()
            try:
                cursor.execute(self.sql[name], params)
                row: tuple[Any, ...] | None = cursor.fetchone()
                return row
            finally:
                cursor.close()

    def column(self, name: str, params: Sequence[Any]) -> list[Any]:
        """The first column of every row."""
        if not storable(params):
            return []
        with self._connection() as connection:
            cursor = connection.cursor()
            try:
                cursor.execute(self.sql[name], params)
                return [row[0] for row in cursor.fetchall()]
            finally:
                cursor.close()

    def session_and_recordings(
        self, session_id: str, partner_id: str
    ) -> tuple[tuple[Any, ...] | None, list[tuple[Any, ...]]]:
        """The session row and its recording rows, from one joined SELECT."""
        if not storable((session_id, partner_id)):
            return None, []
        with self._connection() as connection:
            cursor = connection.cursor()
            try:
                cursor.execute(self.sql["session_recordings"], (session_id, partner_id))
                rows = cursor.fetchall()
            finally:
                cursor.close()
        if not rows:
            return None, []
        session = tuple(rows[0][:SESSION_WIDTH])
        found = [tuple(row[SESSION_WIDTH:]) for row in rows if row[SESSION_WIDTH] is not None]
        return session, found

    def close(self) -> None:
        while True:
            try:
                connection = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                connection.close()
