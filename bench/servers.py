"""Start and stop what the benchmarks compare, on 127.0.0.1 only.

Every server runs as a child process that logs to a file in the run's temporary directory, gets
SIGTERM if the harness dies (``PR_SET_PDEATHSIG``), and is stopped by ``Server.stop``.
"""

from __future__ import annotations

import ctypes
import grp
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).parent
INSTALL_HINT = "apt-get install nginx-light wrk curl"
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class BenchSetupError(RuntimeError):
    """Something the benchmark needs is missing or would not start."""


def find_tools(names: Sequence[str] = ("nginx", "wrk", "curl")) -> dict[str, str]:
    """Absolute paths of the external programs; never installs anything."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN])
    found = {name: shutil.which(name, path=search) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise BenchSetupError(
            f"the benchmarks need nginx, wrk and curl; not found: {', '.join(missing)}. "
            f"Install them with `{INSTALL_HINT}` (the harness never installs anything)."
        )
    return {name: str(path) for name, path in found.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def spawn(
    name: str,
    args: Sequence[str],
    *,
    port: int,
    log: Path,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/",
    timeout_s: float = 60.0,
) -> Server:
    """Start ``args`` and wait until ``ready_path`` answers on ``port`` (any status)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            preexec_fn=_die_with_parent,
        )
    server = Server(name, proc, port, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchSetupError(f"{name} exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", ready_path)
            conn.getresponse().read()
            conn.close()
            return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise BenchSetupError(f"{name} did not answer on port {port}:\n{server.log_tail()}")


def start_tapevault(env: Mapping[str, str], port: int, log: Path) -> Server:
    """``tapevault serve`` as shipped (its request log on, to its log file), other INFO
    lines (``TAPEVAULT_AUDIT=off``'s access lines) silenced."""
    return spawn(
        "tapevault",
        [sys.executable, "-m", "tapevault.cli", "serve", "--log-level", "warning"],
        port=port,
        log=log,
        env={**env, "TAPEVAULT_PORT": str(port), "TAPEVAULT_HOST": HOST},
        ready_path="/healthz",
    )


def start_floor(port: int, log: Path, processes: int = 1) -> Server:
    """The hello-world raw ASGI app under the same uvicorn settings (``bench/floor.py``)."""
    return spawn(
        "floor",
        [sys.executable, "-m", "bench.floor", str(port), str(processes)],
        port=port,
        log=log,
        env={**os.environ, "PYTHONPATH": str(BENCH_DIR.parent)},
    )


def nginx_preamble(prefix: Path, workers: int) -> str:
    """An nginx.conf's main part: workers, pid and error log in ``prefix``, events."""
    # Workers run as the current user when the master is root (the stored audio is mode 0600).
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
    return f"""{user}worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
"""


def nginx_conf(prefix: Path, root: Path, port: int, workers: int = 1) -> str:
    return f"""{nginx_preamble(prefix, workers)}http {{
    access_log off;
    sendfile on;
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_requests 100000000;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    server {{
        listen {HOST}:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def start_nginx(nginx: str, prefix: Path, root: Path, port: int, workers: int = 1) -> Server:
    """nginx serving ``root`` with sendfile, ``workers`` workers (as many as tapevault has
    processes), everything under ``prefix``."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, root, port, workers))
    args = [nginx, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")]
    return spawn("nginx", [*args, "-g", "daemon off;"], port=port, log=prefix / "stdout.log")


def proc_status_kib(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM``-style field of /proc/PID/status, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchSetupError(f"/proc/{pid}/status has no {field}")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True
