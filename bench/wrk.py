"""Run wrk once and read back the summary printed by ``lua/report.lua``."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

LUA_DIR = Path(__file__).parent / "lua"
_MARKER = "BENCH_JSON "


class WrkError(RuntimeError):
    """wrk failed, printed no summary, or the target answered with errors."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    bytes: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int
    raw: dict[str, float]

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def gb_per_s(self) -> float:
        """Response bytes (headers included) per second, in 10^9 bytes."""
        return self.bytes / self.seconds / 1e9


def run_wrk(
    url: str,
    *,
    threads: int,
    connections: int,
    seconds: int,
    script: str | None = None,
    script_args: tuple[str, ...] = (),
    headers: tuple[str, ...] = (),
    timeout_s: int = 10,
    wrk: str = "wrk",
) -> WrkResult:
    """Load ``url`` for ``seconds``; ``script`` names a file in ``lua/`` (request side only).

    Raises ``WrkError`` when any response had a status above 399, or nothing was answered: a
    rate of error pages is not a figure.
    """
    body = "" if script is None else (LUA_DIR / script).read_text()
    body += "\n" + (LUA_DIR / "report.lua").read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-") as lua:
        lua.write(body)
        lua.flush()
        args = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            f"--timeout={timeout_s}s",
            "-s",
            lua.name,
        ]
        for header in headers:
            args += ["-H", header]
        args.append(url)
        if script_args:
            args += ["--", *script_args]
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise WrkError(f"wrk did not finish: {' '.join(args[:-1])}") from exc
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(_MARKER)), None)
    if done.returncode != 0 or line is None:
        raise WrkError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    raw: dict[str, float] = json.loads(line[len(_MARKER) :])
    if raw["status_errors"] or not raw["requests"]:
        raise WrkError(
            f"{url.split('?')[0]}: {raw['status_errors']:.0f} error responses out of "
            f"{raw['requests']:.0f}; the target is misconfigured"
        )
    return WrkResult(
        requests=int(raw["requests"]),
        bytes=int(raw["bytes"]),
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        socket_errors=int(
            raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
        ),
        raw=raw,
    )
