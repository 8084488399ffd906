"""Run a real ``tapevault serve`` process for tests that need sockets (curl, seed examples).

``Server(data_dir)`` binds its listening socket at once (port 0: the kernel picks a free port)
and hands it to every ``tapevault serve --fd`` it starts, so no other process can take the port
between choosing and serving it, and a restart after ``kill()`` serves the same port again.

The server gets the test's settings and nothing of the shell's: ``TAPEVAULT_*`` variables
inherited from the environment are dropped, and ``start(**env)`` overrides the harness's own.
Its stdout and stderr go to ``<data_dir>.server.log`` beside the data directory; when a test
fails, conftest.py attaches what the server wrote during that test to the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy

from tests import leaks

# What a failure report shows at most of one server's output (its end).
REPORT_CHARS = 20_000
LOGS: list[Path] = []  # every server log of this run: the failure report, the secrets check


def free_port() -> int:
    """A port that was free a moment ago (another process may take it before you bind it):
    prefer ``Server(data_dir)``, which binds its own."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tapevault(*args: str, env: dict[str, str], timeout: float = 60) -> str:
    """Run the CLI (as a user would) and return its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "tapevault.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    leaks.keep(f"tapevault {' '.join(args[:2])} (stderr)", done.stderr)
    if done.returncode != 0:
        raise AssertionError(f"tapevault {' '.join(args)} failed: {done.stderr}")
    if args[:2] == ("token", "issue"):
        leaks.SECRETS.add(done.stdout.strip(), "a token printed by the CLI")
    elif done.stdout.lstrip().startswith(("{", "[")):
        with contextlib.suppress(ValueError):
            leaks.harvest(json.loads(done.stdout), leaks.SECRETS, "printed by the CLI")
    else:  # signed URLs printed as text (`tapevault twilio url`)
        leaks.harvest(re.findall(r"\S+://\S+", done.stdout), leaks.SECRETS, "printed by the CLI")
    return done.stdout


def listen(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 (``port`` 0: any free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def inherited_environment() -> dict[str, str]:
    """The test process's environment without any ``TAPEVAULT_*`` setting of the shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TAPEVAULT_")}


def log_marks() -> dict[Path, int]:
    """How long each server log of this run is now (see ``output_since``)."""
    return {path: path.stat().st_size for path in LOGS if path.exists()}


def output_since(marks: dict[Path, int]) -> list[tuple[str, str]]:
    """(title, text) of what each server wrote after ``marks`` (all of a log begun since)."""
    sections = []
    for path in LOGS:
        if not path.exists():
            continue
        with path.open("rb") as f:
            start = marks.get(path, 0)
            size = path.stat().st_size
            f.seek(max(start, size - REPORT_CHARS))
            text = f.read().decode(errors="replace")
        if text.strip():
            cut = " (its end)" if size - start > REPORT_CHARS else ""
            sections.append((f"tapevault serve output{cut}: {path}", text))
    return sections


@dataclass
class Server:
    data_dir: Path
    port: int = 0  # 0: any free port, bound here and now
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    listener: socket.socket = field(init=False, repr=False)
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.listener = listen(self.port)
        self.port = int(self.listener.getsockname()[1])
        weakref.finalize(self, self.listener.close)
        self.log_path = self.data_dir.with_name(f"{self.data_dir.name}.server.log")
        LOGS.append(self.log_path)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **extra_env: str) -> Server:
        """Start ``tapevault serve`` and wait until it answers ``/healthz``; the keyword
        arguments are ``TAPEVAULT_*`` settings and win over the harness's defaults."""
        self.env = {
            **inherited_environment(),
            "TAPEVAULT_DATA_DIR": str(self.data_dir),
            "TAPEVAULT_PORT": str(self.port),
            "TAPEVAULT_PUBLIC_URL": self.base,
            **extra_env,
        }
        fd = self.listener.fileno()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- tapevault serve --fd {fd} ({self.base})\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tapevault.cli", "serve", "--fd", str(fd)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(fd,),
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"tapevault serve exited with {self.process.returncode} during start-up:\n"
                    + self.output()
                )
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise AssertionError(f"tapevault serve did not become healthy:\n{self.output()}")

    def output(self, chars: int = REPORT_CHARS) -> str:
        """The end of what the server processes started by this object wrote."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(max(0, self.log_path.stat().st_size - chars))
            return f.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, as in a crash."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def close(self) -> None:
        """Stop the server and give up its port (a stopped ``Server`` keeps it for a restart)."""
        self.stop()
        self.listener.close()

    def tenant(self, name: str = "clinic", retention: str = "7d") -> dict[str, str]:
        out = tapevault("tenant", "create", name, "--json", "--retention", retention, env=self.env)
        result: dict[str, str] = json.loads(out)
        return result

    def token(self, partner_id: str, *extra: str) -> str:
        return tapevault("token", "issue", "--partner", partner_id, *extra, env=self.env).strip()

    def wait_jobs_done(self, timeout: float = 30) -> None:
        """Wait until the server's worker has run every job it was given (merges included)."""
        url = self.env.get("TAPEVAULT_DATABASE_URL") or f"sqlite:///{self.data_dir}/tapevault.db"
        engine = sqlalchemy.create_engine(url)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with engine.connect() as db:
                    waiting = db.execute(
                        sqlalchemy.text("SELECT count(*) FROM jobs WHERE done_ms IS NULL")
                    ).scalar()
                if waiting == 0:
                    return
                time.sleep(0.1)
        finally:
            engine.dispose()
        raise AssertionError("the worker did not finish its jobs")
