"""One access log over two nodes, with real processes on one PostgreSQL database (README "The
access log" and "Several nodes").

- Two nodes (their own data directories, so their own checkpoint keys and journals), each with
  two server processes, append together for a minute under load on both; the integrator's role
  moves from one node to the other in the middle (its holder restarted). Afterwards every
  request served is exactly one record, both nodes' keys signed checkpoints and are listed, and
  `tapevault audit verify` passes with no flag, passes with both keys pinned, and fails with
  only one pinned.
- The integrator SIGKILLed while it integrates a large backlog: the other node's process takes
  the role and integrates the rest; nothing is lost or doubled, and the log verifies.

The store does not matter to the log: each node keeps its default local store.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import io
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tapevault import cli
from tapevault.core.audit import AuditEntry
from tapevault.core.checkpoints import load_public_key_pem
from tapevault.db.auditstore import SqlAuditStore
from tests.server import Server

pytestmark = [
    pytest.mark.server,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

LOAD_SECONDS = 60
MOVE_AT = 25  # seconds into the load: the integrator's node is restarted, the role moves
THREADS_PER_NODE = 3
DATABASE = "TAPEVAULT_DATABASE_URL"
BACKLOG = 40_000  # records waiting when the integrator is killed among them


def sql(url: str, query: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return [tuple(row) for row in conn.execute(text(query), params)]
    finally:
        engine.dispose()


def scalar(url: str, query: str, **params: object) -> int:
    value = sql(url, query, **params)[0][0]
    return int(str(value)) if value is not None else 0


def role_held(url: str) -> bool:
    """Whether some process holds the integrator's role (its advisory lock)."""
    return scalar(url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") > 0


def verify(server: Server, *flags: str) -> tuple[int, str]:
    """`tapevault audit verify` as run on ``server``'s node (in this process: a CLI start
    costs seconds on a loaded machine, three of them a test)."""
    out = io.StringIO()
    args = ["--data-dir", str(server.data_dir), "--database-url", server.env[DATABASE]]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(["audit", "verify", *args, *flags])
    return code, out.getvalue()


def public_key(server: Server) -> str:
    """The node's public key as an operator would pin it: taken from the node itself."""
    path = server.data_dir.with_name(f"{server.data_dir.name}.pub.pem")
    path.write_text(load_public_key_pem(server.data_dir / "audit-signing.pem"))
    return str(path)


def node_name(server: Server) -> str:
    return (server.data_dir / "node-id").read_text().strip()


def wait(probe: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# --- load --------------------------------------------------------------------------------------


@dataclass
class Gate:
    """Lets a node's load threads in, or holds them out (and waits for those inside) while the
    node restarts, so that no request is in flight when it stops: every request a client saw
    answered was served, and none is left half-sent."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    open: bool = True
    inside: int = 0
    generation: int = 0  # moves when the node restarted: threads reconnect

    def enter(self, deadline: float) -> int | None:
        with self.cond:
            while not self.open:
                if time.monotonic() >= deadline:
                    return None
                self.cond.wait(0.1)
            self.inside += 1
            return self.generation

    def leave(self) -> None:
        with self.cond:
            self.inside -= 1
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.open = False
            while self.inside:
                self.cond.wait()

    def reopen(self) -> None:
        with self.cond:
            self.open = True
            self.generation += 1
            self.cond.notify_all()


def load(server: Server, gate: Gate, key: str, agent: str, deadline: float) -> Counter[int]:
    """Audited session listings on a kept-alive connection until ``deadline``; statuses seen."""
    seen: Counter[int] = Counter()
    conn: http.client.HTTPConnection | None = None
    generation = -1
    headers = {"authorization": f"Bearer {key}", "user-agent": agent}
    while time.monotonic() < deadline:
        now = gate.enter(deadline)
        if now is None:
            break
        try:
            if conn is None or now != generation:
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                generation = now
            conn.request("GET", "/api/v1/sessions", headers=headers)
            response = conn.getresponse()
            response.read()
            seen[response.status] += 1
        finally:
            gate.leave()
    if conn is not None:
        conn.close()
    return seen


def records_of(url: str, agent: str) -> int:
    return scalar(
        url,
        "SELECT count(*) FROM audit_log WHERE action = 'session.list' AND entry LIKE :agent",
        agent=f'%"user_agent":"{agent}"%',
    )


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    a, b = Server(tmp_path / "node-a"), Server(tmp_path / "node-b")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_two_nodes_append_for_a_minute_and_every_request_is_one_record(
    nodes: tuple[Server, Server], database_url: str
) -> None:
    """Two nodes × two processes under load for LOAD_SECONDS, the integrator's node restarted
    at MOVE_AT (the role moves to the other node): requests served == records, per node;
    both keys signed and are listed; verify passes with no flag (saying which key it trusted
    from the database), with both keys pinned, and fails with only one pinned."""
    a, b = nodes
    env = {
        "TAPEVAULT_DATABASE_URL": database_url,
        "TAPEVAULT_PROCESSES": "2",
        "TAPEVAULT_AUDIT_CHECKPOINT_SECONDS": "1",
    }
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    a.start(**env)
    wait(lambda: role_held(database_url), 10, "node A did not take the integrator's role")
    with concurrent.futures.ThreadPoolExecutor(2) as starting:
        started = starting.submit(b.start, **env)
        key = a.tenant()["api_key"]
        started.result()
    phases["start"] = time.monotonic() - t0
    gates = {"a": Gate(), "b": Gate()}
    servers = {"a": a, "b": b}
    start = time.monotonic()
    deadline = start + LOAD_SECONDS
    with concurrent.futures.ThreadPoolExecutor(2 * THREADS_PER_NODE) as pool:
        futures = {
            name: [
                pool.submit(load, servers[name], gates[name], key, f"load/node-{name}", deadline)
                for _ in range(THREADS_PER_NODE)
            ]
            for name in servers
        }
        time.sleep(max(0.0, start + MOVE_AT - time.monotonic()))
        signed_by_a = scalar(database_url, "SELECT count(*) FROM audit_checkpoints")
        gates["a"].close()  # nothing in flight on A
        t1 = time.monotonic()
        a.stop()  # integrates what waits, signs, lets go of the role: B's processes take it
        a.start(**env)
        gates["a"].reopen()
        phases["A restarted"] = time.monotonic() - t1
        served = {name: sum((f.result() for f in fs), Counter()) for name, fs in futures.items()}
    t1 = time.monotonic()
    for gate in gates.values():
        gate.close()
    with concurrent.futures.ThreadPoolExecutor(2) as stopping:
        list(stopping.map(Server.stop, (a, b)))
    phases["stop"] = time.monotonic() - t1

    print(
        f"served in {LOAD_SECONDS} s: {dict(served)}; checkpoints signed by A before: {signed_by_a}"
    )
    assert scalar(database_url, "SELECT count(*) FROM audit_incoming") == 0
    for name in servers:
        assert set(served[name]) == {200}, served
        assert served[name][200] > 100, served
        assert records_of(database_url, f"load/node-{name}") == served[name][200], name
    head = scalar(database_url, "SELECT head_seq FROM audit_state")
    assert scalar(database_url, "SELECT count(*) FROM audit_log") == head
    assert scalar(database_url, "SELECT count(DISTINCT entry) FROM audit_log") == head

    keys = {str(k) for (k,) in sql(database_url, "SELECT DISTINCT key_id FROM audit_checkpoints")}
    listed = {
        str(k): str(n) for k, n in sql(database_url, "SELECT key_id, node FROM audit_signers")
    }
    assert len(keys) == 2, keys  # A signed before its restart, B after
    assert keys <= set(listed), listed
    assert set(listed.values()) == {node_name(a), node_name(b)}, listed

    t1 = time.monotonic()
    code, out = verify(a)
    print(out)
    assert code == 0, out
    assert f"(node {node_name(b)!r}" in out and "trusted from the database only" in out, out
    code, out = verify(a, "--public-key", public_key(a), "--public-key", public_key(b))
    assert code == 0, out
    assert "trusted from the database only" not in out, out
    code, out = verify(a, "--public-key", public_key(a))
    assert code == 1, out
    assert "which is not trusted: the database lists it" in out, out
    phases["verify x3"] = time.monotonic() - t1
    print("seconds:", {name: round(value, 1) for name, value in phases.items()})


# --- the integrator killed mid-batch ------------------------------------------------------------


def backlog(url: str, count: int) -> None:
    """``count`` records made durable, not integrated (as requests on many nodes would leave
    them while the integrator is away), each its own (a doubled one would show)."""
    engine = create_engine(url)
    try:
        store = SqlAuditStore(engine)
        for first in range(0, count, 5000):
            store.write(
                [
                    AuditEntry(
                        at_ms=1_800_000_000_000 + i,
                        action="audit.read",
                        status=200,
                        actor_kind="system",
                        request_id=f"backlog-{i}",
                    )
                    for i in range(first, min(count, first + 5000))
                ]
            )
    finally:
        engine.dispose()


def integrating(url: str) -> bool:
    """Whether a backend is inside an integration step's transaction (it writes the chain and
    the tree, and deletes what it integrated, all in one)."""
    return (
        scalar(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE xact_start IS NOT NULL "
            "AND pid <> pg_backend_pid() AND (query ILIKE 'INSERT INTO audit_log%' "
            "OR query ILIKE 'INSERT INTO audit_tree%' "
            "OR query ILIKE 'DELETE FROM audit_incoming%')",
        )
        > 0
    )


def test_the_integrator_killed_mid_batch_is_replaced_and_nothing_is_lost_or_doubled(
    nodes: tuple[Server, Server], database_url: str
) -> None:
    """Node P holds the integrator's role (its own interval a minute, so it integrates only when
    an audit read asks); a backlog of BACKLOG records and listings on both nodes waits; an audit
    read makes P integrate it, and P is SIGKILLed in the middle. Node Q's process takes the
    role and integrates the rest: every record once, seqs without a gap, verify passes."""
    p, q = nodes
    url = database_url
    p.start(TAPEVAULT_DATABASE_URL=url, TAPEVAULT_AUDIT_INTEGRATE_MS="60000")
    key = p.tenant()["api_key"]
    auth = {"authorization": f"Bearer {key}"}

    def get(server: Server, path: str, timeout: float = 30) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=auth)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    # An audit read integrates what waits, taking the role: P holds it from now on. (The
    # listing's record is written just after its answer: the read must find it waiting.)
    assert get(p, "/api/v1/sessions") == 200
    wait(lambda: scalar(url, "SELECT count(*) FROM audit_incoming") > 0, 15, "no record")
    assert get(p, "/api/v1/audit") == 200
    assert role_held(url)
    q.start(TAPEVAULT_DATABASE_URL=url)  # tries for the role every 250 ms, in vain
    listings = Counter(get(server, "/api/v1/sessions") for server in (p, q) for _ in range(50))
    assert listings == {200: 100}
    backlog(url, BACKLOG)
    wait(
        lambda: scalar(url, "SELECT count(*) FROM audit_incoming") >= BACKLOG + 100,
        15,
        "the listings' records were not written",
    )
    before = scalar(url, "SELECT count(*) FROM audit_log")

    # P integrates the backlog inside this read; it is killed in the middle.
    reader = threading.Thread(target=lambda: _ignore(get, p, "/api/v1/audit", 120), daemon=True)
    reader.start()
    wait(
        lambda: scalar(url, "SELECT count(*) FROM audit_log") > before,
        30,
        "P did not start integrating",
    )
    caught_inside = False
    deadline = time.monotonic() + 2
    while not caught_inside and time.monotonic() < deadline:
        caught_inside = integrating(url)  # a batch's transaction open: kill it there
    p.kill()
    reader.join(5)
    # One snapshot: what is integrated and what waits, after the kill (nobody writes now).
    ((integrated, waiting),) = sql(
        url,
        "SELECT (SELECT count(*) FROM audit_log), (SELECT count(*) FROM audit_incoming)",
    )
    total = int(str(integrated)) + int(str(waiting))
    print(
        f"P killed with {int(str(integrated)) - before} integrated, {waiting} waiting (a "
        f"batch's transaction open just before the kill: {caught_inside})"
    )
    assert int(str(waiting)) > 0, "P finished before it was killed: raise BACKLOG"

    # Q takes the role (its integrator tries every 250 ms) and integrates the rest.
    killed = time.monotonic()
    wait(lambda: scalar(url, "SELECT count(*) FROM audit_incoming") == 0, 60, "Q took nothing")
    print(f"Q integrated the rest {time.monotonic() - killed:.1f} s after the kill")
    q.stop()
    head = scalar(url, "SELECT head_seq FROM audit_state")
    assert scalar(url, "SELECT count(*) FROM audit_log") == total == head
    assert scalar(url, "SELECT min(seq) FROM audit_log") == 1
    assert scalar(url, "SELECT max(seq) FROM audit_log") == head
    assert scalar(url, "SELECT count(DISTINCT entry) FROM audit_log") == total  # none doubled
    reads = "SELECT count(*) FROM audit_log WHERE action = 'audit.read' AND entry"
    assert scalar(url, f"{reads} LIKE '%backlog-%'") == BACKLOG
    assert scalar(url, f"{reads} NOT LIKE '%backlog-%'") in (1, 2)  # the killed read's: if made
    assert scalar(url, "SELECT count(*) FROM audit_log WHERE action = 'session.list'") == 101
    assert "took over as the access log's integrator" in q.output()
    code, out = verify(q)
    assert code == 0, out
    code, out = verify(p)  # on P: Q's key from the database, said so
    assert code == 0, out


def _ignore(get: Callable[..., int], *args: object) -> None:
    with contextlib.suppress(OSError):  # the server was killed under it
        get(*args)
