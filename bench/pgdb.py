"""PostgreSQL for the benchmarks: a database made for each run and dropped after it, and the
backends serving it (whose CPU the scale-out scenarios read)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.servers import BenchSetupError

# Where the harness may create and drop databases: trust auth on loopback, as in the tests
# (whose TAPEVAULT_TEST_PG_URL names a SQLAlchemy dialect that psycopg does not read).
PG_ADMIN_URL = os.environ.get("TAPEVAULT_BENCH_PG_URL") or os.environ.get(
    "TAPEVAULT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
).replace("postgresql+psycopg://", "postgresql://")


def pg_reachable() -> bool:
    try:
        _admin().close()
    except BenchSetupError:
        return False
    return True


def _admin() -> Any:
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise BenchSetupError(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({type(exc).__name__}); the "
            "PostgreSQL scenarios need it (set TAPEVAULT_BENCH_PG_URL to an admin URL)"
        ) from exc


_PREFIX = "tapevault_bench_"


@contextlib.contextmanager
def pg_database(tag: str) -> Iterator[str]:
    """A database made for this run, dropped afterwards with every connection to it, so no run
    ever sees another's rows. Its name carries the harness's pid: databases left by a harness
    that was killed outright (no ``finally``) are dropped by the next run on this machine."""
    name = f"{_PREFIX}{tag}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        for stale in _orphans(conn):
            _drop(conn, stale)
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with _admin() as conn:
            _drop(conn, name)


def _orphans(conn: Any) -> list[str]:
    """This harness's databases whose creating process is gone."""
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s", (_PREFIX + "%",)
    ).fetchall()
    found = []
    for (name,) in rows:
        parts = name.split("_")
        if len(parts) >= 5 and parts[-2].isdigit() and not Path(f"/proc/{parts[-2]}").exists():
            found.append(name)
    return found


def _drop(conn: Any, name: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
    conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def pg_backends(database_url: str) -> list[int]:
    """The server processes (pids) serving connections to this run's database."""
    name = database_url.rsplit("/", 1)[1]
    with _admin() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchall()
    return [int(pid) for (pid,) in rows]
