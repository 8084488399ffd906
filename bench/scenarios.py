"""The scenarios. Each returns rows of (figure, reference measured in the same run, ratio).

A row is ``{"label", "unit", "value", "reference", "ratio", "targets": [...], "met"}``; a target
bounds either the ``value`` or the ``ratio``. The ingest and finalization scenarios live in
``bench/ingest.py`` and ``bench/finalization.py``; their rows are built here.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import accel
from bench import finalization as fin
from bench.data import Dataset
from bench.ingest import COMMIT_INTERVAL, LAG_LIMIT, LATE_AFTER, IngestBench, search, stream_limit
from bench.modes import GiB, KiB, MiB, Mode
from bench.servers import (
    BenchSetupError,
    Server,
    free_port,
    proc_status_kib,
    reset_peak_rss,
    start_floor,
    start_tapevault,
)
from bench.wrk import WrkResult, run_wrk

Row = dict[str, Any]
Result = dict[str, Any]


@dataclass(frozen=True)
class Context:
    mode: Mode
    tools: dict[str, str]
    tapevault: Server
    nginx: Server
    data: Dataset
    audio_root: Path
    scratch: Path
    profile_dir: Path | None = None  # --profile: py-spy of the server at every ingest level
    env: dict[str, str] | None = None  # tapevault's environment (to start a variant of it)

    @property
    def big_tapevault(self) -> str:
        return self.tapevault.base_url + self.data.big_url_path

    @property
    def big_nginx(self) -> str:
        """The same stored file through nginx (same query string, which nginx ignores)."""
        relative = self.data.big_path.relative_to(self.audio_root).as_posix()
        return f"{self.nginx.base_url}/{relative}?{self.data.big_url_path.split('?', 1)[1]}"


def _size(n: int) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit:
            return f"{n / unit:.4g} {name}"
    return f"{n} B"


def target(on: str, op: str, bound: float) -> dict[str, Any]:
    """A bound on a row's ``value`` or ``ratio``: ``op`` is ``>=`` or ``<=``."""
    return {"on": on, "op": op, "bound": bound}


def row(
    label: str,
    unit: str,
    value: float,
    reference: float,
    *targets: dict[str, Any],
    ratio: float | None = None,
) -> Row:
    ratio = value / reference if ratio is None else ratio
    checked = []
    for t in targets:
        actual = value if t["on"] == "value" else ratio
        met = actual >= t["bound"] if t["op"] == ">=" else actual <= t["bound"]
        checked.append({**t, "met": met})
    return {
        "label": label,
        "unit": unit,
        "value": value,
        "reference": reference,
        "ratio": ratio,
        "targets": checked,
        "met": all(t["met"] for t in checked) if checked else None,
    }


def scenario(title: str, reference: str, settings: dict[str, Any], rows: list[Row]) -> Result:
    verdicts = [r["met"] for r in rows if r["met"] is not None]
    return {
        "title": title,
        "reference_name": reference,
        "settings": settings,
        "rows": rows,
        "met": all(verdicts),
    }


def _load(ctx: Context, url: str, connections: int, **kwargs: Any) -> WrkResult:
    """A warm-up run (not measured), then the measured run."""
    mode = ctx.mode
    common = {"threads": min(mode.threads, connections), "connections": connections}
    if mode.warmup_seconds:
        run_wrk(url, seconds=mode.warmup_seconds, wrk=ctx.tools["wrk"], **common, **kwargs)
    return run_wrk(url, seconds=mode.seconds, wrk=ctx.tools["wrk"], **common, **kwargs)


def _wrk_figures(result: WrkResult) -> dict[str, float]:
    return {
        "req_per_s": result.req_per_s,
        "gb_per_s": result.gb_per_s,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "requests": result.requests,
        "socket_errors": result.socket_errors,
    }


# --- 1. recording URLs -----------------------------------------------------------------------


def recording_urls(ctx: Context) -> Result:
    c = ctx.mode.urls_connections
    floor = start_floor(free_port(), ctx.scratch / "floor.log", _processes(ctx))
    try:
        ref = _load(ctx, floor.base_url + "/", c)
    finally:
        floor.stop()
    headers = (f"sdp_suki_token: {ctx.data.token}",)
    sub = _load(ctx, ctx.tapevault.base_url + ctx.data.urls_path, c, headers=headers)
    # The same server with the durable access log off (TAPEVAULT_AUDIT=off: JSON log lines at
    # INFO, silenced here), on the same data: what the log costs this endpoint.
    port = free_port()
    quiet = start_tapevault(
        {**(ctx.env or {}), "TAPEVAULT_AUDIT": "off", "TAPEVAULT_WORKERS": "0"},
        port,
        ctx.scratch / "tapevault-audit-off.log",
    )
    try:
        off = _load(ctx, quiet.base_url + ctx.data.urls_path, c, headers=headers)
    finally:
        quiet.stop()
    # And with the request log off (TAPEVAULT_REQUEST_LOG=off): what one JSON line per request
    # costs, with the access log on (as shipped) and off (where the line weighs the most). The
    # servers above write their lines to their log files.
    no_lines = _unlogged(ctx, c, headers, {})
    bare = _unlogged(ctx, c, headers, {"TAPEVAULT_AUDIT": "off"})
    return scenario(
        "Recording URLs (3 recordings)",
        "hello-world raw ASGI app, same uvicorn settings",
        {
            "connections": c,
            "seconds": ctx.mode.seconds,
            "tapevault": _wrk_figures(sub),
            "reference": _wrk_figures(ref),
            "tapevault_access_log_off": _wrk_figures(off),
            "tapevault_request_log_off": _wrk_figures(no_lines),
            "tapevault_both_logs_off": _wrk_figures(bare),
        },
        [
            row(
                "req/s",
                "req/s",
                sub.req_per_s,
                ref.req_per_s,
                target("value", ">=", 15_000),
                target("ratio", ">=", 0.5),
            ),
            row("p50 latency", "ms", sub.p50_ms, ref.p50_ms),
            row("p99 latency", "ms", sub.p99_ms, ref.p99_ms, target("value", "<=", 20)),
            row(
                "req/s with the access log on (reference: off)",
                "req/s",
                sub.req_per_s,
                off.req_per_s,
            ),
            row("p99 with the access log on (reference: off)", "ms", sub.p99_ms, off.p99_ms),
            row(
                "req/s with the request log on (reference: off)",
                "req/s",
                sub.req_per_s,
                no_lines.req_per_s,
            ),
            row("p99 with the request log on (reference: off)", "ms", sub.p99_ms, no_lines.p99_ms),
            row(
                "access log off: req/s with the request log on (reference: off)",
                "req/s",
                off.req_per_s,
                bare.req_per_s,
            ),
            row(
                "access log off: p99 with the request log on (reference: off)",
                "ms",
                off.p99_ms,
                bare.p99_ms,
            ),
        ],
    )


def _unlogged(
    ctx: Context, connections: int, headers: tuple[str, ...], env: dict[str, str]
) -> WrkResult:
    """The recording-URL load on a second server on the same data, request log off."""
    port = free_port()
    settings = {**(ctx.env or {}), **env, "TAPEVAULT_REQUEST_LOG": "off", "TAPEVAULT_WORKERS": "0"}
    name = "-".join(["request-log-off", *(k.lower() for k in env)])
    server = start_tapevault(settings, port, ctx.scratch / f"tapevault-{name}.log")
    try:
        return _load(ctx, server.base_url + ctx.data.urls_path, connections, headers=headers)
    finally:
        server.stop()


# --- 2 and 3. byte ranges against nginx --------------------------------------------------------


def _processes(ctx: Context) -> int:
    return int((ctx.env or {}).get("TAPEVAULT_PROCESSES", "1"))


def _nginx_title(ctx: Context) -> str:
    workers = _processes(ctx)
    return f"nginx, sendfile on, {workers} worker{'s' if workers > 1 else ''}"


def _ranges(ctx: Context, span: int, connections: int) -> tuple[WrkResult, WrkResult]:
    args = (str(ctx.data.big_size), str(span))
    ref = _load(ctx, ctx.big_nginx, connections, script="ranges.lua", script_args=args)
    sub = _load(ctx, ctx.big_tapevault, connections, script="ranges.lua", script_args=args)
    return sub, ref


def _range_settings(
    ctx: Context, span: int, c: int, sub: WrkResult, ref: WrkResult
) -> dict[str, Any]:
    return {
        "connections": c,
        "seconds": ctx.mode.seconds,
        "range_bytes": span,
        "file_bytes": ctx.data.big_size,
        "tapevault": _wrk_figures(sub),
        "reference": _wrk_figures(ref),
    }


def large_ranges(ctx: Context) -> Result:
    span, c = ctx.mode.range_bytes, ctx.mode.range_connections
    sub, ref = _ranges(ctx, span, c)
    return scenario(
        f"Large ranges ({_size(span)} of a {_size(ctx.data.big_size)} file, c{c})",
        _nginx_title(ctx),
        _range_settings(ctx, span, c, sub, ref),
        [
            row("throughput", "GB/s", sub.gb_per_s, ref.gb_per_s, target("ratio", ">=", 0.9)),
            row("p99 latency", "ms", sub.p99_ms, ref.p99_ms),
        ],
    )


def seeks(ctx: Context) -> Result:
    span, c = ctx.mode.seek_bytes, ctx.mode.seek_connections
    sub, ref = _ranges(ctx, span, c)
    return scenario(
        f"Seeks ({_size(span)} ranges, c{c})",
        _nginx_title(ctx),
        _range_settings(ctx, span, c, sub, ref),
        [
            row("req/s", "req/s", sub.req_per_s, ref.req_per_s, target("ratio", ">=", 0.5)),
            row("p99 latency", "ms", sub.p99_ms, ref.p99_ms),
        ],
    )


SEEK_AUTHZ_SECONDS = 1  # the shortest lease: the figure operators get with the tightest window


def _seeks_cached(
    ctx: Context, args: tuple[str, str], big_args: tuple[str, str]
) -> tuple[WrkResult, WrkResult, int, WrkResult]:
    """The same seeks and large ranges through a front nginx with the shipped seek location
    switched on (``TAPEVAULT_ACCEL_AUTHZ_SECONDS``): (64 KiB, large, lines sent under a cached
    answer, nginx alone's 64 KiB seeks measured right after, while the pair still runs: the
    machine is shared, and a reference taken a minute later moves the ratio more than the
    design does). wrk's connections share one URL, address and user agent: one playback,
    whose answer nginx asks for again each time it runs out."""
    prefix = ctx.scratch / "nginx-seeks"
    port = free_port()
    front = accel.start_front(
        ctx.tools["nginx"], prefix, port, _processes(ctx), ctx.audio_root, seeks=True
    )
    try:
        backend = accel.start_accel_tapevault(
            ctx.env or {},
            port,
            ctx.scratch,
            prefix / "delivery.log",
            authz_seconds=SEEK_AUTHZ_SECONDS,
        )
        try:
            url = front.base_url + ctx.data.big_url_path
            c, big_c = ctx.mode.seek_connections, ctx.mode.range_connections
            before = accel.delivery_lines(prefix, leased=True)
            cached = _load(ctx, url, c, script="ranges.lua", script_args=args)
            leased = accel.delivery_lines(prefix, leased=True) - before
            beside = _load(ctx, ctx.big_nginx, c, script="ranges.lua", script_args=args)
            large = _load(ctx, url, big_c, script="ranges.lua", script_args=big_args)
        finally:
            backend.stop()
    finally:
        front.stop()
    return cached, large, leased, beside


def seeks_accel(ctx: Context) -> Result:
    """64 KiB seeks with nginx sending the bytes (``bench/accel.py``), tapevault alone and
    nginx alone, in one run."""
    span, c = ctx.mode.seek_bytes, ctx.mode.seek_connections
    prefix = ctx.scratch / "nginx-front"
    port = free_port()
    front = accel.start_front(ctx.tools["nginx"], prefix, port, _processes(ctx), ctx.audio_root)
    try:
        backend = accel.start_accel_tapevault(
            ctx.env or {}, port, ctx.scratch, prefix / "delivery.log"
        )
        try:
            args = (str(ctx.data.big_size), str(span))
            url = front.base_url + ctx.data.big_url_path
            before = accel.delivery_lines(prefix)
            via = _load(ctx, url, c, script="ranges.lua", script_args=args)
            sent_by_nginx = accel.delivery_lines(prefix) - before
            # What sendfile buys where bytes, not responses, dominate: the large ranges.
            big, big_c = ctx.mode.range_bytes, ctx.mode.range_connections
            big_args = (str(ctx.data.big_size), str(big))
            via_large = _load(ctx, url, big_c, script="ranges.lua", script_args=big_args)
        finally:
            backend.stop()
    finally:
        front.stop()
    cached, cached_large, leased, beside = _seeks_cached(ctx, args, big_args)
    sub, ref = _ranges(ctx, span, c)
    large, large_ref = _ranges(ctx, big, big_c)
    if sent_by_nginx < via.requests:
        raise BenchSetupError(
            f"nginx logged {sent_by_nginx} deliveries for {via.requests} requests: "
            "tapevault did not hand them off"
        )
    if leased < cached.requests:
        raise BenchSetupError(
            f"nginx logged {leased} deliveries under a cached answer for {cached.requests} "
            "requests: the seek location did not serve them"
        )
    return scenario(
        f"Seeks behind nginx with X-Accel-Redirect ({_size(span)} ranges, c{c})",
        _nginx_title(ctx),
        {
            **_range_settings(ctx, span, c, sub, ref),
            "tapevault_behind_nginx_accel": _wrk_figures(via),
            "delivery_lines": sent_by_nginx,
            "large_range_bytes": big,
            "large_range_connections": big_c,
            "large_behind_nginx_accel": _wrk_figures(via_large),
            "large_tapevault": _wrk_figures(large),
            "large_reference": _wrk_figures(large_ref),
            "tapevault_behind_nginx_cached": _wrk_figures(cached),
            "reference_beside_cached": _wrk_figures(beside),
            "large_behind_nginx_cached": _wrk_figures(cached_large),
            "cached_delivery_lines": leased,
            "authz_seconds": SEEK_AUTHZ_SECONDS,
        },
        [
            row(
                "req/s, behind nginx answering seeks (cached authorisation)",
                "req/s",
                cached.req_per_s,
                ref.req_per_s,
                target("ratio", ">=", 0.8),
            ),
            row(
                "req/s, the same vs nginx alone measured right after it",
                "req/s",
                cached.req_per_s,
                beside.req_per_s,
                target("ratio", ">=", 0.8),
            ),
            row(
                "p99, behind nginx answering seeks (cached authorisation)",
                "ms",
                cached.p99_ms,
                ref.p99_ms,
            ),
            row(
                "req/s, behind nginx with X-Accel-Redirect",
                "req/s",
                via.req_per_s,
                ref.req_per_s,
                target("ratio", ">=", 0.8),
            ),
            row("p99, behind nginx with X-Accel-Redirect", "ms", via.p99_ms, ref.p99_ms),
            row(
                "req/s, tapevault alone",
                "req/s",
                sub.req_per_s,
                ref.req_per_s,
                target("ratio", ">=", 0.5),
            ),
            row("p99, tapevault alone", "ms", sub.p99_ms, ref.p99_ms),
            row(
                f"{_size(big)} ranges (c{big_c}), behind nginx with X-Accel-Redirect",
                "GB/s",
                via_large.gb_per_s,
                large_ref.gb_per_s,
            ),
            row(
                f"{_size(big)} ranges (c{big_c}), behind nginx answering seeks",
                "GB/s",
                cached_large.gb_per_s,
                large_ref.gb_per_s,
            ),
            row(
                f"{_size(big)} ranges (c{big_c}), tapevault alone",
                "GB/s",
                large.gb_per_s,
                large_ref.gb_per_s,
            ),
        ],
    )


# --- 4. time to first byte ---------------------------------------------------------------------


def _ttfb(curl: str, url: str, ranges: list[tuple[int, int]]) -> list[float]:
    """Seconds to the first byte of each range, in order, over one kept-alive connection."""
    args = [curl]
    for i, (first, last) in enumerate(ranges):
        if i:
            args.append("--next")
        args += [
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-r",
            f"{first}-{last}",
            "-w",
            "%{http_code} %{time_starttransfer}\\n",
            url,
        ]
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=60 + 2 * len(ranges), check=False
    )
    lines = done.stdout.split()
    codes, times = lines[0::2], lines[1::2]
    if done.returncode != 0 or len(times) != len(ranges) or set(codes) != {"206"}:
        raise BenchSetupError(f"curl ranges failed: {done.stderr.strip()} {set(codes)}")
    return [float(t) for t in times]


def _start_end(ctx: Context, url: str) -> tuple[list[float], list[float]]:
    size, n = ctx.data.big_size, ctx.mode.ttfb_bytes
    start, end = (0, n - 1), (size - n, size - 1)
    times = _ttfb(ctx.tools["curl"], url, [start, end] * ctx.mode.ttfb_samples)
    return times[0::2], times[1::2]


def ttfb(ctx: Context) -> Result:
    tv_start, tv_end = _start_end(ctx, ctx.big_tapevault)
    ng_start, ng_end = _start_end(ctx, ctx.big_nginx)
    ms = 1000.0
    median = statistics.median
    return scenario(
        f"Time to first byte ({_size(ctx.mode.ttfb_bytes)} range), end vs start of file",
        "the same range size at the start of the file; nginx at the end",
        {
            "samples": ctx.mode.ttfb_samples,
            "file_bytes": ctx.data.big_size,
            "tapevault_start_ms": median(tv_start) * ms,
            "tapevault_end_ms": median(tv_end) * ms,
            "nginx_start_ms": median(ng_start) * ms,
            "nginx_end_ms": median(ng_end) * ms,
        },
        [
            row(
                "median TTFB end vs start",
                "ms",
                median(tv_end) * ms,
                median(tv_start) * ms,
                target("ratio", "<=", 1.2),
            ),
            row("median TTFB end vs nginx", "ms", median(tv_end) * ms, median(ng_end) * ms),
        ],
    )


# --- 5. memory while serving whole files -----------------------------------------------------


def memory(ctx: Context) -> Result:
    pid, clients = ctx.tapevault.pid, ctx.mode.download_clients
    peak_resettable = reset_peak_rss(pid)
    idle = proc_status_kib(pid, "VmRSS")
    peak = idle
    cmd = [
        ctx.tools["curl"],
        "-sS",
        "--max-time",
        "600",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        ctx.big_tapevault,
    ]
    started = time.monotonic()
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(clients)
    ]
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() - started < 620:
            peak = max(peak, proc_status_kib(pid, "VmRSS"))
            time.sleep(0.005)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    elapsed = time.monotonic() - started
    outputs = [p.communicate()[0].strip() for p in procs]
    if outputs != [f"200 {ctx.data.big_size}"] * clients:
        raise BenchSetupError(f"whole-file downloads failed: {sorted(set(outputs))}")
    if peak_resettable:
        peak = max(peak, proc_status_kib(pid, "VmHWM"))
    growth_mib, idle_mib, peak_mib = (peak - idle) / 1024, idle / 1024, peak / 1024
    return scenario(
        f"Memory: {clients} clients downloading the {_size(ctx.data.big_size)} file whole",
        "the server's own RSS at rest, just before",
        {
            "clients": clients,
            "file_bytes": ctx.data.big_size,
            "seconds": elapsed,
            "gb_per_s": clients * ctx.data.big_size / elapsed / 1e9,
            "peak_from_vmhwm": peak_resettable,
        },
        [
            row("peak RSS", "MiB", peak_mib, idle_mib),
            row("RSS growth", "MiB", growth_mib, idle_mib, target("value", "<=", 64)),
        ],
    )


# --- 6. ingest capacity ------------------------------------------------------------------------


def ingest(ctx: Context) -> Result:
    mode = ctx.mode
    bench = IngestBench(
        ctx.scratch / "ingest", mode.ingest_seconds, mode.ingest_generators, ctx.profile_dir
    )
    maximum = min(mode.ingest_max, stream_limit())
    rows: list[Row] = []
    sizes: dict[str, Any] = {}
    held_20ms = 0
    for frame_bytes, name, goal in ((640, "20 ms", 1000), (3200, "100 ms", None)):
        start = mode.ingest_start if goal else max(mode.ingest_start, held_20ms)
        start = min(start, maximum)

        def level(n: int, frame_bytes: int = frame_bytes) -> dict[str, Any]:
            return bench.level("tapevault", n, frame_bytes)

        held, levels = search(level, start, maximum, min(mode.ingest_min, start))
        if goal:
            held_20ms = held
        # Figures at the highest level held (or the lowest tried, if none was).
        at = max(
            (lv for lv in levels if lv["passed"]),
            key=lambda lv: lv["streams"],
            default=min(levels, key=lambda lv: lv["streams"]),
        )
        floor = bench.level("floor", at["streams"], frame_bytes)
        frames_per_s = 1000 / at["period_ms"]
        floor_per_core = 1e6 / (floor["server_cpu_us_per_frame"] * frames_per_s)
        sizes[name] = {"frame_bytes": frame_bytes, "held": held, "levels": levels, "floor": floor}
        rows += [
            row(
                f"{name} frames: streams held",
                "streams",
                held,
                floor_per_core,
                *([target("value", ">=", goal)] if goal else []),
            ),
            row(
                f"{name}: server CPU per frame at {at['streams']}",
                "µs",
                at["server_cpu_us_per_frame"],
                floor["server_cpu_us_per_frame"],
            ),
            row(
                f"{name}: memory per stream at {at['streams']}",
                "KiB",
                at["kib_per_stream"],
                floor["kib_per_stream"],
                target("value", "<=", 64),
            ),
            row(
                f"{name}: ack latency p99 at {at['streams']}",
                "ms",
                at["ack_p99_ms"],
                floor["ack_p99_ms"],
            ),
        ]
    return scenario(
        "Ingest: real-time 16 kHz pcm_s16le WebSocket streams, none acked >200 ms late or lost",
        "the framework floor (WebSocket acks every 0.1 s, no disk) at the same stream count; "
        "for streams held: one core ÷ the floor's CPU per stream",
        {
            "seconds_per_level": mode.ingest_seconds,
            "late_after_ms": LATE_AFTER * 1000,
            "commit_interval_s": COMMIT_INTERVAL,
            "generator_lag_limit_periods": LAG_LIMIT,
            "generators": mode.ingest_generators,
            "max_streams": maximum,
            "frame_sizes": sizes,
        },
        rows,
    )


# --- 7. finalization -----------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def finalization(ctx: Context) -> Result:
    mode = ctx.mode
    cases = fin.run(
        ctx.scratch / "finalization",
        mode.finalize_seconds,
        mode.finalize_mp3_seconds,
        mode.finalize_repeats,
        shutil.which("ffmpeg"),
    )
    labels = {
        "stream_raw": "stream raw → WAV",
        "wav_upload": "WAV upload decode",
        "mp3_upload": "MP3 upload decode",
    }
    rows = [
        row(
            f"{labels[name]}, {_duration(c['audio_s'])}",
            "× real time",
            c["audio_s"] / c["wall_s"],
            c["audio_s"] / c["ref_wall_s"],
            target("value", ">=", 500),
        )
        for name, c in cases.items()
    ]
    return scenario(
        "Finalization: 16 kHz mono audio to a stored canonical WAV (convert + LocalStore.put)",
        "one fsynced copy of the same WAV (MP3: the ffmpeg CLI decoding it)",
        {
            "repeats": mode.finalize_repeats,
            "mp3": "ffmpeg" if "mp3_upload" in cases else "skipped: no ffmpeg",
            "cases": cases,
        },
        rows,
    )


SCENARIOS: dict[str, Callable[[Context], Result]] = {
    "recording_urls": recording_urls,
    "large_ranges": large_ranges,
    "seeks": seeks,
    "seeks_accel": seeks_accel,
    "ttfb": ttfb,
    "memory": memory,
    "ingest": ingest,
    "finalization": finalization,
}


# Scenarios kept in their own modules (issues 11 and 14: object stores, several nodes, the
# database engines). They import the helpers above, hence the import at the end; each is looked
# up when it runs, so that importing one of those modules first (a test does) also works.
from bench import engines, gateway, growth, nodes  # noqa: E402

SCENARIOS.update(
    object_ranges=lambda ctx: gateway.object_ranges(ctx),
    two_nodes=lambda ctx: nodes.two_nodes(ctx),
    engines=lambda ctx: engines.engines(ctx),
    growth=lambda ctx: growth.growth(ctx),
)
