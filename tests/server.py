"""Run a real ``tapevault serve`` process for tests that need sockets (curl, seed examples)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy


def free_port() -> int:
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
    if done.returncode != 0:
        raise AssertionError(f"tapevault {' '.join(args)} failed: {done.stderr}")
    return done.stdout


@dataclass
class Server:
    data_dir: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **extra_env: str) -> Server:
        self.env = {
            **extra_env,
            **os.environ,
            "TAPEVAULT_DATA_DIR": str(self.data_dir),
            "TAPEVAULT_PORT": str(self.port),
            "TAPEVAULT_PUBLIC_URL": self.base,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tapevault.cli", "serve", "--log-level", "warning"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=1):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    raise AssertionError("tapevault serve exited during start-up") from None
                time.sleep(0.1)
        raise AssertionError("tapevault serve did not become healthy")

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
