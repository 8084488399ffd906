"""Ingest capacity: how many real-time WebSocket audio streams one ``tapevault serve`` holds.

A stream is ``WS /api/v1/ambient/session/{id}/stream?encoding=pcm_s16le&sample_rate=16000&
channels=1`` on its own session, sending one binary frame per ``period`` (640 B every 20 ms or
3,200 B every 100 ms: 32,000 B/s, real time) and reading the server's ``{"type":"ack","bytes":N}``
messages; after ``seconds`` it sends ``{"type":"end"}`` and reads the final ack and the close.

Definitions (also in BENCHMARKS.md):

* A frame is **late** when the ack covering its last byte arrives more than ``LATE_AFTER`` =
  100 ms + the group-commit interval (0.1 s) = 200 ms after the generator wrote the frame to its
  socket. Every frame acknowledged before the streams are ended counts. Then every stream sends
  ``end`` at once; acks from then on (the last ~0.2 s of audio) are timed as the *end burst*
  (``end_ack_*``), reported but not judged: no deployment ends hundreds of streams in the same
  millisecond.
* A stream **lost** audio when its final ack differs from the bytes it sent, or it did not end
  with close code 1000.
* A level **passes** when every stream opened, no frame was late, no stream lost anything, and
  the generator kept real time: 99 % of its ticks within half a frame period of schedule
  (``LAG_LIMIT``). Lateness is timed from the actual write, so generator jitter cannot make a
  frame late; but a generator further behind offers less than the nominal load, and the level
  counts as failed, marked ``generator behind``.

Each level runs against a fresh server (a copy of a pristine data directory holding the partner,
so levels do not inherit each other's files, jobs or heap) with one new session per stream. Its
idle RSS is taken after a two-stream warm-up; CPU (``/proc/PID/stat`` utime+stime) and peak RSS
are measured over a window that skips the first quarter of the level (at most 2 s). The search
doubles from a start level until a level fails, then bisects to within 10 % (at least
``STEP``). The machine is shared: a level that fails while processes other than the server and
the generators used more than ``NOISY_CORES`` is run once more, and the second run counts. The
reference is the framework floor (``bench/floor.py``: uvicorn with the same settings, acking
every 0.1 s, no disk) at the same stream count. CPU per frame divides by the frames the generator
sent in the window, so it means something only at levels that pass (a saturated server has not
read everything that was sent).
"""

from __future__ import annotations

import contextlib
import http.client
import inspect
import json
import os
import resource
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from bench import data, wsload
from bench.servers import (
    BENCH_DIR,
    HOST,
    BenchSetupError,
    Server,
    _die_with_parent,
    free_port,
    proc_status_kib,
    start_floor,
    start_tapevault,
)
from tapevault.ingest.durable import GroupCommitter

BYTES_PER_SECOND = 32_000  # 16 kHz, mono, 16-bit
QUERY = "?encoding=pcm_s16le&sample_rate=16000&channels=1"
COMMIT_INTERVAL: float = inspect.signature(GroupCommitter).parameters["interval"].default
LATE_AFTER = 0.100 + COMMIT_INTERVAL
LAG_LIMIT = 0.5  # the generator's p99 lateness against its schedule, in frame periods
NOISY_CORES = 0.25  # a level that fails while other processes used more is run once more
STEP = 50  # the search's finest step in streams
MAX_LEVELS = 12  # per search, whatever happens
_CLK = os.sysconf("SC_CLK_TCK")


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}]   {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def stream_limit() -> int:
    """Streams the file-descriptor limit allows (the server holds a socket and a file each)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, (soft - 200) // 2)


class IngestBench:
    """Runs levels against fresh servers; ``root`` is this scenario's scratch directory."""

    def __init__(
        self,
        root: Path,
        seconds: float,
        generators: int,
        profile_dir: Path | None = None,
        keep: bool = False,
    ) -> None:
        self.root = root
        self.seconds = seconds
        self.generators = generators
        self.profile_dir = profile_dir
        self.keep = keep
        self.runs = 0
        self.pristine = root / "pristine"
        self.token = data.create_tenant(data.tapevault_env(self.pristine, free_port()))

    # -- one level -------------------------------------------------------------------------

    def level(self, kind: str, streams: int, frame_bytes: int) -> dict[str, Any]:
        self.runs += 1
        where = self.root / f"{self.runs:02d}-{kind}-{frame_bytes}-{streams}"
        where.mkdir(parents=True)
        port = free_port()
        if kind == "floor":
            server = start_floor(port, where / "floor.log")
        else:
            shutil.copytree(self.pristine, where / "data")
            env = data.tapevault_env(where / "data", port)
            server = start_tapevault(env, port, where / "tapevault.log")
        try:
            sessions = self._sessions(server, kind, streams + 2)
            targets = [f"/api/v1/ambient/session/{s}/stream{QUERY}" for s in sessions]
            period = frame_bytes / BYTES_PER_SECOND
            # Warm-up: the first stream builds the committer, heartbeat and thread pool.
            warm = wsload.run_blocking(self._config(port, targets[:2], frame_bytes, 1.0))
            if warm["opened"] != 2 or warm["lost_streams"]:
                raise BenchSetupError(f"{kind}: the warm-up streams failed: {warm['errors']}")
            time.sleep(1.0)
            idle_kib = proc_status_kib(server.pid, "VmRSS")
            profile = None
            if self.profile_dir is not None and kind == "tapevault":
                self.profile_dir.mkdir(parents=True, exist_ok=True)
                profile = self.profile_dir / f"{where.name}.txt"
            figures = self._load(server, targets[2:], frame_bytes, where, profile)
            if server.proc.poll() is not None:
                raise BenchSetupError(f"{kind} exited during the level:\n{server.log_tail()}")
        finally:
            server.stop()
            shutil.rmtree(where / "data", ignore_errors=True)
            if not self.keep:
                shutil.rmtree(where, ignore_errors=True)
        growth_kib = max(figures["peak_rss_kib"] - idle_kib, 4)  # at least one page
        figures.update(
            kind=kind,
            streams=streams,
            frame_bytes=frame_bytes,
            period_ms=period * 1000,
            idle_rss_kib=idle_kib,
            kib_per_stream=growth_kib / streams,
        )
        figures["passed"], figures["verdict"] = _verdict(figures, streams)
        _log(_describe(figures))
        return figures

    def _config(
        self, port: int, targets: list[str], frame_bytes: int, seconds: float, **kw: Any
    ) -> wsload.Config:
        return wsload.Config(
            host=HOST,
            port=port,
            targets=targets,
            token=self.token,
            frame_bytes=frame_bytes,
            period=frame_bytes / BYTES_PER_SECOND,
            seconds=seconds,
            late_after=LATE_AFTER,
            **kw,
        )

    def _sessions(self, server: Server, kind: str, n: int) -> list[str]:
        if kind == "floor":  # the floor accepts any path
            return [f"floor{i:06d}" for i in range(n)]
        conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
        headers = {"sdp_suki_token": self.token}
        sessions = []
        try:
            for _ in range(n):
                conn.request("POST", "/api/v1/ambient/session/create", headers=headers)
                response = conn.getresponse()
                body = response.read()
                if response.status >= 300:
                    raise BenchSetupError(f"session create -> {response.status}: {body[:200]!r}")
                sessions.append(json.loads(body)["ambient_session_id"])
        finally:
            conn.close()
        return sessions

    def _load(
        self,
        server: Server,
        targets: list[str],
        frame_bytes: int,
        where: Path,
        profile: Path | None = None,
    ) -> dict[str, Any]:
        """Spread ``targets`` over the generator processes, run them, measure the window."""
        parts = [targets[i :: self.generators] for i in range(self.generators)]
        parts = [p for p in parts if p]
        procs: list[subprocess.Popen[str]] = []
        errors: list[IO[bytes]] = []
        try:
            for i, part in enumerate(parts):
                err = (where / f"wsload-{i}.log").open("wb")
                errors.append(err)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bench.wsload"],
                    cwd=BENCH_DIR.parent,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                    preexec_fn=_die_with_parent,
                )
                procs.append(proc)
                cfg = self._config(
                    server.port,
                    part,
                    frame_bytes,
                    self.seconds,
                    phase_offset=i,
                    phase_stride=len(parts),
                    connect_timeout=60.0,
                )
                _send(proc, asdict(cfg))
            connect_deadline = time.monotonic() + 60 + len(targets) / 50
            for proc in procs:
                _receive(proc, connect_deadline, where)
            start = time.monotonic() + 0.3
            w0 = start + min(2.0, self.seconds / 4)
            w1 = start + self.seconds - 0.2
            outputs = [where / f"wsload-{i}.json" for i in range(len(procs))]
            for proc, output in zip(procs, outputs, strict=True):
                _send(proc, {"start": start, "window": [w0, w1], "output": str(output)})
            window = _measure(server.pid, [p.pid for p in procs], w0, w1, profile)
            done_deadline = start + self.seconds + 90 + len(targets) / 100
            for proc in procs:
                _receive(proc, done_deadline, where)
            results = [json.loads(output.read_text()) for output in outputs]
            for proc in procs:
                proc.wait(timeout=30)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            for err in errors:
                err.close()
        return _combine(results, window)


def _send(proc: subprocess.Popen[str], message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message) + "\n")
    proc.stdin.flush()


def _receive(proc: subprocess.Popen[str], deadline: float, where: Path) -> dict[str, Any]:
    """The next JSON line a generator prints, or ``BenchSetupError`` at ``deadline``."""
    assert proc.stdout is not None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchSetupError(f"a load generator did not answer in time (logs in {where})")
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
        if ready:
            line = proc.stdout.readline()
            if not line:
                tail = ""
                with contextlib.suppress(OSError):
                    tail = next(where.glob("wsload-*.log")).read_text()[-2000:]
                raise BenchSetupError(f"a load generator exited ({proc.poll()}):\n{tail}")
            message: dict[str, Any] = json.loads(line)
            return message


def _measure(
    server_pid: int, generator_pids: list[int], w0: float, w1: float, profile: Path | None
) -> dict[str, Any]:
    """CPU of the server, the generators and the machine over [w0, w1]; the server's peak RSS.
    With ``profile``, py-spy samples the server over the window (100 Hz, without pausing it)
    into that file as collapsed stacks."""

    def sleep_until(t: float) -> None:
        delay = t - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    sleep_until(w0)
    spy = None
    if profile is not None:
        spy_args = [shutil.which("py-spy") or "py-spy", "record", "--nonblocking", "--threads"]
        spy_args += ["-r", "100", "-f", "raw", "-d", str(max(1, int(w1 - w0)))]
        spy_args += ["-p", str(server_pid), "-o", str(profile)]
        spy = subprocess.Popen(
            spy_args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    t0 = time.monotonic()
    s0 = cpu_seconds(server_pid)
    g0 = [cpu_seconds(pid) for pid in generator_pids]
    m0 = machine_jiffies()
    peak = proc_status_kib(server_pid, "VmRSS")
    while time.monotonic() < w1 - 0.25:
        time.sleep(0.2)
        peak = max(peak, proc_status_kib(server_pid, "VmRSS"))
    sleep_until(w1)
    elapsed = time.monotonic() - t0
    s1 = cpu_seconds(server_pid)
    g1 = [cpu_seconds(pid) for pid in generator_pids]
    m1 = machine_jiffies()
    peak = max(peak, proc_status_kib(server_pid, "VmRSS"))
    busy, total = m1[0] - m0[0], m1[1] - m0[1]
    if spy is not None:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(timeout=10)
    return {
        "window_seconds": elapsed,
        # At least one clock tick, so a tiny (smoke) level still gives a finite cost per frame.
        "server_cpu_seconds": max(s1 - s0, 1 / _CLK),
        "generator_cpu_seconds": [b - a for a, b in zip(g0, g1, strict=True)],
        "machine_busy_cores": busy / total * len(os.sched_getaffinity(0)) if total else 0.0,
        "peak_rss_kib": peak,
    }


def _combine(results: list[dict[str, Any]], window: dict[str, Any]) -> dict[str, Any]:
    latency = wsload.merge_hist([r["latency"] for r in results])
    end_latency = wsload.merge_hist([r["end_latency"] for r in results])
    lag = wsload.merge_hist([r["lag"] for r in results])
    codes: dict[str, int] = {}
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["close_codes"].items():
            codes[k] = codes.get(k, 0) + v
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    frames = sum(r["window_frames"] for r in results)
    late_by_second: dict[str, int] = {}
    worst: dict[str, float] = {}
    for r in results:
        for k, v in r["late_by_second"].items():
            late_by_second[k] = late_by_second.get(k, 0) + v
        for k, v in r["worst_ms_by_second"].items():
            worst[k] = max(worst.get(k, 0.0), v)
    seconds = window["window_seconds"]
    gen_cpu = sum(window["generator_cpu_seconds"])
    server_cpu = window["server_cpu_seconds"]
    return {
        "opened": sum(r["opened"] for r in results),
        "connect_seconds": max(r["connect_seconds"] for r in results),
        "frames_sent": sum(r["frames_sent"] for r in results),
        "window_frames": frames,
        "window_seconds": seconds,
        "late_frames": sum(r["late_frames"] for r in results),
        "late_by_second": dict(sorted(late_by_second.items(), key=lambda kv: int(kv[0]))),
        "worst_ack_ms_by_second": dict(sorted(worst.items(), key=lambda kv: int(kv[0]))),
        "lost_streams": sum(r["lost_streams"] for r in results),
        "lost_bytes": sum(r["lost_bytes"] for r in results),
        "bytes_sent": sum(r["bytes_sent"] for r in results),
        "close_codes": codes,
        "errors": errors,
        "ack_p50_ms": wsload.percentile(latency, 0.50) * 1000,
        "ack_p99_ms": wsload.percentile(latency, 0.99) * 1000,
        "ack_max_ms": latency["max"] * 1000,
        "end_ack_p99_ms": wsload.percentile(end_latency, 0.99) * 1000,
        "end_ack_max_ms": end_latency["max"] * 1000,
        "end_late_frames": sum(r["end_late_frames"] for r in results),
        "lag_p99_ms": wsload.percentile(lag, 0.99) * 1000,
        "lag_max_ms": lag["max"] * 1000,
        "server_cpu_us_per_frame": server_cpu / max(frames, 1) * 1e6,
        "server_cores": server_cpu / seconds,
        "generator_cores": gen_cpu / seconds,
        "generator_us_per_frame": gen_cpu / max(frames, 1) * 1e6,
        "machine_busy_cores": window["machine_busy_cores"],
        "other_cores": max(window["machine_busy_cores"] - (server_cpu + gen_cpu) / seconds, 0.0),
        "peak_rss_kib": window["peak_rss_kib"],
    }


def _verdict(f: dict[str, Any], streams: int) -> tuple[bool, str]:
    problems = []
    if f["opened"] != streams:
        problems.append(f"{streams - f['opened']} not opened")
    if f["late_frames"]:
        problems.append(f"{f['late_frames']} late")
    if f["lost_streams"] or set(f["close_codes"]) - {"1000"}:
        problems.append(f"{f['lost_streams']} lost")
    if f["lag_p99_ms"] > LAG_LIMIT * f["period_ms"]:
        problems.append("generator behind")
    return not problems, "; ".join(problems) or "pass"


def _describe(f: dict[str, Any]) -> str:
    return (
        f"{f['kind']} {f['streams']} streams x {f['period_ms']:.0f} ms: {f['verdict']}; "
        f"ack p99 {f['ack_p99_ms']:.0f} ms max {f['ack_max_ms']:.0f} "
        f"(end burst {f['end_ack_max_ms']:.0f}); "
        f"server {f['server_cores']:.2f} cores {f['server_cpu_us_per_frame']:.1f} us/frame, "
        f"{f['kib_per_stream']:.1f} KiB/stream; generator {f['generator_cores']:.2f} cores "
        f"(lag p99 {f['lag_p99_ms']:.1f} ms); machine {f['machine_busy_cores']:.2f} cores"
    )


def search(
    run: Callable[[int], dict[str, Any]], start: int, maximum: int, minimum: int
) -> tuple[int, list[dict[str, Any]]]:
    """The highest passing level: double from ``start`` until a failure (or ``maximum``), halve
    while the first level fails (down to ``minimum``), then bisect to within 10 % (``STEP``)."""
    levels: list[dict[str, Any]] = []
    passed, failed = 0, 0

    def attempt(n: int) -> bool:
        nonlocal passed, failed
        result = run(n)
        if not result["passed"] and result["other_cores"] > NOISY_CORES:
            # Someone else's work shared the two cores: this failure may not be the server's.
            result["verdict"] += f"; {result['other_cores']:.2f} cores used by others: repeated"
            levels.append(result)
            result = run(n)
        levels.append(result)
        if result["passed"]:
            passed = max(passed, n)
        else:
            failed = n if not failed else min(failed, n)
        return bool(result["passed"])

    n = start
    while len(levels) < MAX_LEVELS:
        if attempt(n):
            if n >= maximum or (failed and n * 2 >= failed):
                break
            n = min(n * 2, maximum)
        else:
            if passed or n <= minimum:
                break
            n = max(n // 2, minimum)
    while (
        passed
        and failed > passed
        and failed - passed > max(STEP, passed // 10)
        and len(levels) < MAX_LEVELS
    ):
        middle = (passed + failed) // 2
        attempt(max(passed + STEP, middle // STEP * STEP))
    return passed, levels
