"""Real servers and the access log's integration: a process killed between durable and
integrated loses nothing (the next integrator takes the records), and two processes appending
together for a minute leave a log that verifies with one record per request served; on SQLite
and PostgreSQL (there for half a minute: tests/test_two_nodes_audit.py runs two nodes of two
processes each on PostgreSQL for a full minute)."""

from __future__ import annotations

import concurrent.futures
import http.client
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.server import Server

pytestmark = pytest.mark.server

# Seconds of load per engine. PostgreSQL's minute is tests/test_two_nodes_audit.py's (two nodes,
# two processes each); here it keeps a shorter run, to spare the suite half a minute.
LOAD_SECONDS = {"sqlite": 60, "postgresql": 30}


def count(url: str, sql: str) -> int:
    engine = create_engine(url.replace("sqlite:///", "sqlite:///", 1))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar() or 0)
    finally:
        engine.dispose()


def listed(server: Server, key: str, n: int) -> int:
    """``n`` audited session listings on one kept-alive connection; how many answered 200."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    ok = 0
    try:
        for _ in range(n):
            conn.request("GET", "/api/v1/sessions", headers={"authorization": f"Bearer {key}"})
            response = conn.getresponse()
            response.read()
            ok += response.status == 200
    finally:
        conn.close()
    return ok


def verify(server: Server) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tapevault.cli", "audit", "verify"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def served_records(url: str) -> int:
    return count(url, "SELECT count(*) FROM audit_log WHERE action = 'session.list'")


def test_records_survive_sigkill_before_integration(tmp_path: Path, database_url: str) -> None:
    """Requests answered (their records durable), the process SIGKILLed before its integrator
    ran: the records wait in the database; the next server integrates them, the log verifies."""
    server = Server(tmp_path / "data")
    env = {"TAPEVAULT_DATABASE_URL": database_url}
    server.start(**env, TAPEVAULT_AUDIT_INTEGRATE_MS="60000")
    try:
        key = server.tenant()["api_key"]
        assert listed(server, key, 40) == 40
        # A listing's record is written right after its answer (not waited for): once all 40
        # are durable, none is integrated yet (the interval is a minute).
        deadline = time.monotonic() + 15
        while count(database_url, "SELECT count(*) FROM audit_incoming") < 40:
            assert time.monotonic() < deadline, "the listings' records were not written"
            time.sleep(0.05)
        assert served_records(database_url) == 0  # durable, not integrated
        server.kill()
        server.start(**env)
        deadline = time.monotonic() + 15
        while count(database_url, "SELECT count(*) FROM audit_incoming"):
            assert time.monotonic() < deadline, "the next integrator did not take the records"
            time.sleep(0.05)
        assert served_records(database_url) == 40
    finally:
        server.stop()
    verify(server)


def test_two_processes_append_together_and_every_request_is_one_record(
    tmp_path: Path, database_url: str
) -> None:
    """TAPEVAULT_PROCESSES=2 under load for LOAD_SECONDS: each process appends, one integrates;
    afterwards requests served == records, and the log verifies."""
    server = Server(tmp_path / "data")
    server.start(TAPEVAULT_DATABASE_URL=database_url, TAPEVAULT_PROCESSES="2")
    try:
        key = server.tenant()["api_key"]
        engine = "sqlite" if database_url.startswith("sqlite") else "postgresql"
        deadline = time.monotonic() + LOAD_SECONDS[engine]

        def worker() -> int:
            served = 0
            while time.monotonic() < deadline:
                served += listed(server, key, 20)
            return served

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            served = sum(f.result() for f in [pool.submit(worker) for _ in range(6)])
        assert served > 100
    finally:
        server.stop()  # SIGTERM: the integrator integrates what waits and checkpoints
    assert count(database_url, "SELECT count(*) FROM audit_incoming") == 0
    assert served_records(database_url) == served
    verify(server)
