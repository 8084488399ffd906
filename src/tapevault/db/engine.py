"""Database connections and migrations, for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL``: a commit that returned is on disk, because an
acknowledged recording must survive a power cut, not only a crash.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Engine,
    cast,
    create_engine,
    event,
    extract,
    func,
    select,
)
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from tapevault import inline
from tapevault.db import outage

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlalchemy_url(database_url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy would default to psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    return database_url


def make_engine(database_url: str) -> Engine:
    """An engine with the per-connection settings each backend needs."""
    url = sqlalchemy_url(database_url)
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 5.0}, pool_size=8
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return outage.install(engine)
    return outage.install(
        create_engine(
            url, pool_size=8, max_overflow=8, pool_pre_ping=True, poolclass=GuardedQueuePool
        )
    )


class GuardedQueuePool(QueuePool):
    """The PostgreSQL engine's pool: refuses a connection inside the event loop's database-free
    attempt (``tapevault.inline``) before taking one, so nothing is checked out, pinged or
    invalidated; the attempt is then made again in a thread."""

    def _do_get(self) -> ConnectionPoolEntry:
        inline.check()
        return super()._do_get()


def make_read_only_engine(database_url: str) -> Engine:
    """An engine that cannot write, for commands that only read (``audit verify``, ``export``).

    SQLite is opened ``mode=ro``; and when no ``-wal`` file exists (nobody has the database
    open, e.g. a copy or an archive) also ``immutable=1``, because even a read-only WAL reader
    would create ``-wal`` and ``-shm`` files beside it. PostgreSQL sessions are
    ``default_transaction_read_only``, so any write fails instead of happening.
    """
    url = sqlalchemy_url(database_url)
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise FileNotFoundError(f"no SQLite database at {path}")
        flags = "mode=ro" if Path(f"{path}-wal").exists() else "mode=ro&immutable=1"
        uri = f"{path.resolve().as_uri()}?{flags}"

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=5.0)

        return outage.install(create_engine("sqlite://", creator=connect, pool_size=2))
    return outage.install(
        create_engine(
            url,
            connect_args={"options": "-c default_transaction_read_only=on"},
            pool_size=2,
            pool_pre_ping=True,
        )
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


# pg_advisory_xact_lock's key for migrations: any constant, the same in every tapevault version.
MIGRATION_LOCK = 0x7461706576  # "tapev"


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest revision; returns that revision.

    Several nodes (or a rolling deploy) start at once against one PostgreSQL database: the
    first takes a transaction-scoped advisory lock and migrates, the others wait for it and
    then find the schema at head (without the lock, they raced to create the same tables and
    all but one failed to start). SQLite serves the processes of one host, and ``serve``
    migrates before it starts its ``TAPEVAULT_PROCESSES``.
    """
    config = alembic_config()
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return head_revision()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def database_now_ms(engine: Engine) -> ColumnElement[int]:
    """The database's current time in milliseconds, as an SQL expression: every server writing
    or judging a lease (streams, jobs, webhook deliveries) then reads the same clock, whatever its
    own says."""
    if engine.dialect.name == "postgresql":
        return cast(extract("epoch", func.now()) * 1000, BigInteger)
    # SQLite runs on this machine: its clock is the operating system's (unlike the process's
    # Clock, which a test may shift). 2440587.5 is the Julian day of the Unix epoch.
    return cast((func.julianday("now") - 2440587.5) * 86_400_000, BigInteger)
