"""A real server whose open files run out: audited requests answer 503 (not a hang), /healthz
says so, and both recover by themselves once the idle connections that took the files close."""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import need
from tests.server import Server, free_port

pytestmark = pytest.mark.server

HEADROOM = 24  # files the server may open beyond what it holds when the limit is lowered
ANSWER_WITHIN = 15.0  # seconds; only a hang comes near it


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def until(condition: Callable[[], bool], what: str, timeout: float = ANSWER_WITHIN) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


def get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> tuple[int, str]:
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    return response.status, response.read().decode()


def test_exhausted_open_files_answer_503_then_recover(tmp_path: Path) -> None:
    """With the server's open-file limit lowered and filled by idle connections, an audited
    request on a kept-alive connection answers 503 and /healthz 503 (a new connection is
    answered or refused, never left hanging); after the idle sockets close, the server
    serves again and /healthz is 200."""
    need(os.path.isdir("/proc/self/fd") and hasattr(resource, "prlimit"), "Linux /proc, prlimit")
    server = Server(tmp_path / "data", free_port()).start()
    idle: list[socket.socket] = []
    try:
        assert server.process is not None
        pid = server.process.pid
        tenant = server.tenant()
        audit = {"authorization": f"Bearer {tenant['api_key']}"}
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=ANSWER_WITHIN)
        for _ in range(3):  # warm: database connections and threads opened before the limit
            assert get(conn, "/api/v1/audit", audit)[0] == 200
        limit = open_files(pid) + HEADROOM
        _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
        # More idle connections than the server has files left: it accepts until it has none
        # (the rest wait in the listen backlog, or are refused).
        for _ in range(HEADROOM + 8):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        until(lambda: open_files(pid) >= limit, "the server's files are all taken")

        status, body = get(conn, "/api/v1/audit", audit)
        assert status == 503 and "access log" in body
        status, body = get(conn, "/healthz", {})
        assert status == 503 and json.loads(body)["status"] == "unavailable"
        try:
            fresh = http.client.HTTPConnection("127.0.0.1", server.port, timeout=ANSWER_WITHIN)
            fresh_status = get(fresh, "/api/v1/audit", audit)[0]
        except (ConnectionError, http.client.RemoteDisconnected):
            fresh_status = 0  # refused: the server had no file to take it with
        assert fresh_status in (0, 503)

        for sock in idle:
            sock.close()
        idle.clear()
        until(lambda: get(conn, "/healthz", {})[0] == 200, "/healthz is 200 again")
        assert get(conn, "/api/v1/audit", audit)[0] == 200
        conn.close()
    finally:
        for sock in idle:
            sock.close()
        server.stop()
