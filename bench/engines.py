"""Issue 14's harness rows: the recording-URL endpoint on SQLite and PostgreSQL, one process and
two, with the durable access log on and off, and the delay from a record being durable to its
being integrated into the verified log.

One data set per engine (a data directory with its SQLite database; a PostgreSQL database made
for this run), three short recordings uploaded over HTTP, then one server at a time on that data:

| run | settings |
|---|---|
| log on, 1 process | as shipped |
| log off, 1 process | ``TAPEVAULT_AUDIT=off`` (the recording_urls scenario's "off") |
| log on, 2 processes | ``TAPEVAULT_PROCESSES=2`` |

SQLite and PostgreSQL alternate run by run, so that each engine-vs-engine pair is measured
minutes, not a whole scenario, apart; the floor with two uvicorn workers is measured last, for
the two-process PostgreSQL row against the floor.

**Durable → integrated.** A request waits only for its record's durable append; the
deployment's integrator sequences, chains and hashes it into the tree a moment later and
observes each record's delay in the Prometheus histogram
``tapevault_access_log_integration_delay_seconds`` (integration time minus the request's event
time). The PostgreSQL one-process run scrapes ``/metrics`` (``TAPEVAULT_METRICS_LISTEN``) before
and after its load and reports the p99 of the observations made during it, against the target of
1 s. A build without the metric says "not measured" and why, in its settings.
"""

from __future__ import annotations

import math
import re
import urllib.request
from typing import Any

from bench import data, fleet, pgdb
from bench.scenarios import Context, Result, Row, row, scenario, target
from bench.servers import HOST, free_port, start_floor

INTEGRATION_METRIC = "tapevault_access_log_integration_delay_seconds"
_BUCKET = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)_bucket\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)"
)
_LE = re.compile(r'(?:^|,)\s*le="(?P<le>[^"]+)"')

# The runs, in the order they alternate between the engines: (key, settings).
RUNS: tuple[tuple[str, dict[str, str]], ...] = (
    ("on_1", {}),
    ("off_1", {"TAPEVAULT_AUDIT": "off"}),
    ("on_2", {"TAPEVAULT_PROCESSES": "2"}),
)


def histogram_buckets(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of one histogram in a Prometheus text exposition, summed over
    its label sets (several processes, several labels): {upper bound: count}."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        match = _BUCKET.match(line)
        if not match or match["name"] != name:
            continue
        le = _LE.search(match["labels"])
        if le is None:
            continue
        bound = math.inf if le["le"] == "+Inf" else float(le["le"])
        buckets[bound] = buckets.get(bound, 0.0) + float(match["value"])
    return buckets


def quantile_bound(
    before: dict[float, float], after: dict[float, float], q: float
) -> tuple[float, int] | None:
    """The smallest bucket bound under which a fraction ``q`` of the observations made between
    two scrapes fall (an upper bound of their ``q`` quantile), and how many there were; None
    when there were none."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    for bound, count in zip(bounds, counts, strict=True):
        if count >= q * total:
            return bound, int(total)
    return math.inf, int(total)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as answer:
        text: str = answer.read().decode()
        return text


def engines(ctx: Context) -> Result:
    with pgdb.pg_database("engines") as database_url:
        deployments = {
            "sqlite": fleet.Deployment(ctx.scratch / "engines-sqlite", {}),
            "postgresql": fleet.Deployment(
                ctx.scratch / "engines-postgresql", {"TAPEVAULT_DATABASE_URL": database_url}
            ),
        }
        paths, tokens = {}, {}
        for engine, deployment in deployments.items():
            _, tokens[engine] = deployment.tenant()
            node = deployment.start()
            try:
                paths[engine] = fleet.urls_path(
                    fleet.url_session(data.Api(node.port, tokens[engine]))
                )
            finally:
                deployment.stop()
        runs: dict[str, dict[str, Any]] = {"sqlite": {}, "postgresql": {}}
        integration: dict[str, Any] = {}
        for key, settings in RUNS:
            for engine, deployment in deployments.items():
                metrics = free_port() if key == "on_1" else None
                extra = {**settings, "TAPEVAULT_WORKERS": "0"}
                if metrics:
                    extra["TAPEVAULT_METRICS_LISTEN"] = f"{HOST}:{metrics}"
                node = deployment.start(**extra)
                try:
                    before = _scrape(metrics) if metrics else ""
                    watch = _parties(node.pid, database_url if engine == "postgresql" else None)
                    url = node.base_url + paths[engine]
                    runs[engine][key] = _load(ctx, url, tokens[engine], watch).figures()
                    if metrics and engine == "postgresql":
                        integration = _integration(before, _scrape(metrics))
                finally:
                    deployment.stop()
    floor = start_floor(free_port(), ctx.scratch / "engines-floor.log", 2)
    try:
        floor_2 = _load(ctx, floor.base_url + "/", None, {"server": [floor.pid]}).figures()
    finally:
        fleet.stop_tree(floor)
    return scenario(
        f"Recording URLs (3 recordings, c{ctx.mode.urls_connections}) by database engine, "
        "processes and access log",
        "the same endpoint under the other setting named in the row, same run",
        {
            "connections": ctx.mode.urls_connections,
            "seconds": ctx.mode.seconds,
            **runs,
            "floor_2_processes": floor_2,
            "integration_delay": integration,
        },
        _rows(runs, floor_2, integration),
    )


def _load(ctx: Context, url: str, token: str | None, watch: fleet.Watch) -> fleet.Measured:
    return fleet.url_load(ctx.mode, ctx.tools["wrk"], [url], token, watch)


def _parties(server: int, database_url: str | None) -> fleet.Watch:
    """The server's processes, and on PostgreSQL the backends serving its connections (read
    once the warm-up has opened them)."""
    if database_url is None:
        return {"server": [server]}
    return lambda: {"server": [server], "postgres": pgdb.pg_backends(database_url)}


def _integration(before: str, after: str) -> dict[str, Any]:
    found = quantile_bound(
        histogram_buckets(before, INTEGRATION_METRIC),
        histogram_buckets(after, INTEGRATION_METRIC),
        0.99,
    )
    if found is None:
        return {
            "measured": False,
            "why": f"no {INTEGRATION_METRIC} observations on /metrics during the load: this "
            "build integrates each record in the commit that makes it durable (no integrator)",
        }
    bound, count = found
    finite = [b for b in histogram_buckets(after, INTEGRATION_METRIC) if math.isfinite(b)]
    if math.isinf(bound):  # past the largest bucket: report that bound, and say so
        return {
            "measured": True,
            "p99_upper_bound_s": max(finite, default=0.0),
            "above_largest_bucket": True,
            "observations": count,
        }
    return {"measured": True, "p99_upper_bound_s": bound, "observations": count}


def _rows(
    runs: dict[str, dict[str, Any]], floor_2: dict[str, Any], integration: dict[str, Any]
) -> list[Row]:
    sq, pg = runs["sqlite"], runs["postgresql"]

    def pair(
        label: str, value: dict[str, Any], reference: dict[str, Any], *bounds: dict[str, Any]
    ) -> list[Row]:
        return [
            row(f"{label}: req/s", "req/s", value["req_per_s"], reference["req_per_s"], *bounds),
            row(f"{label}: p99", "ms", value["p99_ms"], reference["p99_ms"]),
        ]

    rows = [
        *pair(
            "PostgreSQL vs SQLite, 1 process, log on",
            pg["on_1"],
            sq["on_1"],
            target("ratio", ">=", 0.8),
        ),
        *pair(
            "log on vs off, 1 process, SQLite", sq["on_1"], sq["off_1"], target("ratio", ">=", 0.8)
        ),
        *pair(
            "log on vs off, 1 process, PostgreSQL",
            pg["on_1"],
            pg["off_1"],
            target("ratio", ">=", 0.8),
        ),
        *pair(
            "2 processes vs 1, log on, SQLite", sq["on_2"], sq["on_1"], target("ratio", ">=", 1.6)
        ),
        *pair(
            "2 processes vs 1, log on, PostgreSQL",
            pg["on_2"],
            pg["on_1"],
            target("ratio", ">=", 1.6),
        ),
        row(
            "PostgreSQL, 2 processes, log on, vs the floor (2 workers): req/s",
            "req/s",
            pg["on_2"]["req_per_s"],
            floor_2["req_per_s"],
            target("value", ">=", 15_000),
            target("ratio", ">=", 0.5),
        ),
        row(
            "PostgreSQL, 2 processes, log on, vs the floor (2 workers): p99",
            "ms",
            pg["on_2"]["p99_ms"],
            floor_2["p99_ms"],
            target("value", "<=", 20),
        ),
    ]
    if integration.get("measured"):
        rows.append(
            row(
                "record durable → integrated, PostgreSQL, under the URL load: p99 (bucket bound), "
                "vs the URL request's p99",
                "ms",
                integration["p99_upper_bound_s"] * 1000,
                pg["on_1"]["p99_ms"],
                target("value", "<=", 1000),
            )
        )
    return rows
