"""What the scale-out scenarios share: tapevault nodes on their own data directories sharing a
database and a store, a load measured together with the CPU each party used, and nginx as a
round-robin front (PostgreSQL databases: ``bench/pgdb.py``; emulators: ``bench/emulators.py``).

On two cores shared by everything, which party ran out of CPU first is half of what a ratio
means, hence the CPU of every party in every measured run.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import data
from bench.ingest import cpu_seconds, machine_jiffies
from bench.modes import Mode
from bench.servers import HOST, Server, free_port, spawn, start_tapevault
from bench.wrk import WrkResult, run_wrk
from tapevault.audio_gen import tone_wav_bytes

_CLK = os.sysconf("SC_CLK_TCK")


# --- tapevault nodes -----------------------------------------------------------------------------

FIRST = "node-a"


@dataclass
class Deployment:
    """The settings every node of one deployment shares (database, store), and its tenant."""

    scratch: Path
    shared: dict[str, str]  # TAPEVAULT_DATABASE_URL, TAPEVAULT_STORAGE_URL, store credentials
    public_url: str | None = None  # the front's URL, when nodes sit behind one
    nodes: list[Server] = field(default_factory=list)
    started: int = 0

    def __post_init__(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)

    def env(self, name: str, port: int, **extra: str) -> dict[str, str]:
        env = data.tapevault_env(self.scratch / name, port)
        env.update(self.shared)
        if self.public_url:
            env["TAPEVAULT_PUBLIC_URL"] = self.public_url
        env.update(extra)
        return env

    def cli(self, *args: str) -> str:
        """``tapevault ARGS`` with the first node's settings (its data directory holds the
        SQLite database, when there is no PostgreSQL, and the audit key)."""
        return data.cli(self.env(FIRST, free_port()), *args)

    def tenant(self) -> tuple[str, str]:
        """A partner made through the CLI, and a two-hour token: (partner_id, token)."""
        partner = json.loads(self.cli("tenant", "create", "bench", "--json"))
        token = self.cli("token", "issue", "--partner", partner["partner_id"], "--ttl", "2h")
        return partner["partner_id"], token

    def start(self, name: str = "", **extra: str) -> Server:
        """A node named ``name`` (its data directory); the first node by default."""
        name = name or FIRST
        port = free_port()
        self.started += 1  # a log per start: a node restarted on the same data says why it failed
        log = self.scratch / f"{name}-{self.started}.log"
        node = start_tapevault(self.env(name, port, **extra), port, log)
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            stop_tree(node)
        self.nodes.clear()


def url_session(api: data.Api) -> str:
    """A session with three short recordings (5, 10, 20 s), listed: the recording-URL load's
    target, as in the main data set."""
    session = api.new_session()
    for seconds in (5.0, 10.0, 20.0):
        api.upload(session, tone_wav_bytes(seconds, sample_rate=16000))
    api.end(session)
    api.recordings(session, 3, timeout_s=120)
    return session


def urls_path(session: str) -> str:
    return f"/api/v1/ambient/session/{session}/recording"


# --- a load, and who used the CPU during it ------------------------------------------------------


def tree_pids(pid: int) -> list[int]:
    """A process and its descendants (uvicorn workers, nginx workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(child) for child in f.read().split()]
    return found


def stop_tree(server: Server) -> None:
    """Stop a server and make sure none of its processes outlives it: ``PR_SET_PDEATHSIG`` is
    set on the server, not on the workers it forks, and a server killed after its grace (a slow
    shutdown on a loaded machine) would leave them serving, holding their database and locks."""
    pids = tree_pids(server.pid)[1:]
    server.stop()
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _cpu(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


# The parties whose CPU a load reads, by name: root pids (their descendants count too), or a
# function giving them once the warm-up is over.
Watch = Mapping[str, Sequence[int]] | Callable[[], Mapping[str, Sequence[int]]] | None


@dataclass(frozen=True)
class Measured:
    """One measured load: wrk's figures (summed over the wrk processes) and the cores each
    watched party used over the run (``load`` is wrk itself, ``machine`` everything, ``others``
    the machine less every party named)."""

    req_per_s: float
    gb_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: int
    cores: dict[str, float]

    def figures(self) -> dict[str, Any]:
        return {
            "req_per_s": self.req_per_s,
            "gb_per_s": self.gb_per_s,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "requests": self.requests,
            "socket_errors": self.socket_errors,
            "cores": self.cores,
        }


def measure(
    urls: Sequence[str],
    *,
    seconds: int,
    warmup_seconds: int,
    threads: int,
    connections: int,
    wrk: str,
    watch: Watch = None,
    **kwargs: Any,
) -> Measured:
    """wrk against every URL at once (one wrk process each, the connections and threads split
    between them), after an unmeasured warm-up; the CPU of every watched party over the
    measured run. Percentiles of several wrk processes are the worst of them (p99 of a union is
    at most the largest p99: a conservative figure)."""
    share_c = max(1, connections // len(urls))
    share_t = max(1, min(share_c, threads // len(urls)))

    def run_all(duration: int) -> list[WrkResult]:
        results: list[WrkResult | BaseException] = [RuntimeError("not run")] * len(urls)

        def one(i: int, url: str) -> None:
            try:
                results[i] = run_wrk(
                    url,
                    threads=share_t,
                    connections=share_c,
                    seconds=duration,
                    wrk=wrk,
                    **kwargs,
                )
            except BaseException as exc:  # re-raised below, in the harness's thread
                results[i] = exc

        workers = [threading.Thread(target=one, args=item) for item in enumerate(urls)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return [r for r in results if isinstance(r, WrkResult)]

    if warmup_seconds:
        run_all(warmup_seconds)
    # Read after the warm-up: a node's connection pool has opened its connections by then.
    roots = (watch() if callable(watch) else watch) or {}
    pids = {name: [p for root in group for p in tree_pids(root)] for name, group in roots.items()}

    before = {name: _cpu(group) for name, group in pids.items()}
    load_before, (busy_before, _) = _children_cpu(), machine_jiffies()
    started = time.monotonic()
    results = run_all(seconds)
    wall = time.monotonic() - started
    cores = {name: (_cpu(group) - before[name]) / wall for name, group in pids.items()}
    cores["load"] = (_children_cpu() - load_before) / wall
    cores["machine"] = (machine_jiffies()[0] - busy_before) / _CLK / wall
    # Everyone else on the machine (other engineers' test runs, PostgreSQL's own background
    # processes): what the parties measured could not have.
    cores["others"] = max(
        0.0, cores["machine"] - sum(v for k, v in cores.items() if k != "machine")
    )
    return Measured(
        req_per_s=sum(r.req_per_s for r in results),
        gb_per_s=sum(r.gb_per_s for r in results),
        p50_ms=max(r.p50_ms for r in results),
        p99_ms=max(r.p99_ms for r in results),
        requests=sum(r.requests for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        cores=cores,
    )


def url_load(
    mode: Mode,
    wrk: str,
    urls: Sequence[str],
    token: str | None,
    watch: Watch,
) -> Measured:
    """The recording-URL load of the mode (``urls_connections``, Suki's token header) on
    ``urls``, split between them; no token for the floor."""
    return measure(
        urls,
        seconds=mode.seconds,
        warmup_seconds=mode.warmup_seconds,
        threads=mode.threads,
        connections=mode.urls_connections,
        wrk=wrk,
        watch=watch,
        headers=(f"sdp_suki_token: {token}",) if token else (),
    )


# --- nginx as a front ----------------------------------------------------------------------------


def front_conf(prefix: Path, port_by_upstream: Mapping[int, Sequence[int]]) -> str:
    """One nginx, one worker, a ``server`` per listening port, each proxying round-robin to its
    upstream nodes over kept-alive connections (as a load balancer in front of tapevault is
    configured: HTTP/1.1 upstream, ``Connection`` cleared, buffering of small answers on)."""
    user = ""
    if os.geteuid() == 0:
        import grp
        import pwd

        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
    blocks = []
    for i, (port, nodes) in enumerate(port_by_upstream.items()):
        servers = "".join(f"        server {HOST}:{n};\n" for n in nodes)
        blocks.append(
            f"    upstream nodes{i} {{\n{servers}        keepalive 128;\n    }}\n"
            f"    server {{\n        listen {HOST}:{port};\n"
            f"        location / {{\n            proxy_pass http://nodes{i};\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "            proxy_set_header Host $http_host;\n"
            "        }\n    }\n"
        )
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    tcp_nodelay on;
    keepalive_requests 100000000;
    underscores_in_headers on;  # Suki's sdp_suki_token (deploy/nginx/tapevault.conf does too)
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
{"".join(blocks)}}}
"""


def start_front(nginx: str, prefix: Path, upstreams: Mapping[int, Sequence[int]]) -> Server:
    """nginx listening on each port of ``upstreams``, in front of that port's node ports."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(front_conf(prefix, upstreams))
    args = [nginx, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")]
    port = next(iter(upstreams))
    return spawn("nginx-front", [*args, "-g", "daemon off;"], port=port, log=prefix / "out.log")
