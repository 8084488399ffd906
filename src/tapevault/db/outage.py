"""A database that cannot be reached is ``Unavailable`` (503 in every dialect), said once here.

Every statement tapevault runs goes either through a SQLAlchemy engine (``install`` hooks its
``handle_error`` event, which also fires when a connection cannot even be opened) or through
``FastReader``'s raw DBAPI connections (``translated``). Both classify the driver's error the same
way, so no route, repository method or CLI command needs its own ``except``: a PostgreSQL server
that is down, restarting or terminated our backend, and an SQLite file that is locked, unreadable
or on a failing disk answer 503 with a reason instead of an opaque 500. Nothing is cached from the
failure (SQLAlchemy invalidates a disconnected pool connection; ``FastReader`` closes its own), so
the first request after the database is back is served.

What is not an outage stays a bug and a 500: SQLite's generic ``SQLITE_ERROR`` (no such table, a
syntax error), integrity and programming errors.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext

from tapevault.errors import DatabaseUnavailable

log = logging.getLogger("tapevault.db")

MESSAGE = "The database cannot be reached; try again shortly."

# SQLite's primary result codes that mean "the file or its lock is unusable now", not a bug:
# PERM, BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
_SQLITE_OUTAGE = frozenset({3, 5, 6, 8, 10, 11, 13, 14, 15, 26})


def is_outage(error: BaseException, is_disconnect: bool = False) -> bool:
    """True when ``error`` (a DBAPI exception) says the database cannot be used right now."""
    if is_disconnect:
        return True
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return isinstance(code, int) and (code & 0xFF) in _SQLITE_OUTAGE
    # psycopg (PEP 249): OperationalError is the server or the link (down, shutting down,
    # our backend terminated, a cancelled or deadlocked statement); InterfaceError a closed
    # connection. Matched by name, so the driver need not be importable here.
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"OperationalError", "InterfaceError"})


def unavailable(error: BaseException) -> DatabaseUnavailable:
    """The ``DatabaseUnavailable`` (an ``Unavailable``) to raise for an outage; the driver's
    text goes to the server log only (it can name hosts and paths)."""
    log.warning("database unavailable: %s: %s", type(error).__name__, str(error).strip()[:300])
    return DatabaseUnavailable(MESSAGE)


def install(engine: Engine) -> Engine:
    """Make ``engine`` raise ``Unavailable`` for every outage, after SQLAlchemy's own cleanup
    (a disconnected connection is invalidated before the exception leaves)."""

    def on_error(context: ExceptionContext) -> None:
        original = context.original_exception
        if is_outage(original, context.is_disconnect):
            raise unavailable(original)

    event.listen(engine, "handle_error", on_error)
    return engine


@contextlib.contextmanager
def translated(dbapi: Any) -> Iterator[None]:
    """For raw DBAPI calls (``FastReader``): an outage raised inside becomes ``Unavailable``."""
    try:
        yield
    except dbapi.Error as exc:
        if is_outage(exc):
            raise unavailable(exc) from exc
        raise
