"""The vault as it grows (issue 14, part 6): the same figures on an empty vault and on one with
years of history, side by side in one run, on SQLite and PostgreSQL.

``python -m bench --only growth`` (scale: ``TAPEVAULT_BENCH_GROWTH_SCALE``, default 0.01 in full
mode; the smoke mode uses a tiny one), or the generator alone::

    python -m bench.growth fill --scale 0.1 --data-dir /tmp/vault [--database-url postgresql://...]

Each vault is a data directory (and a PostgreSQL database made for the run): migrated, two
tenants made through the CLI (the one that will be the biggest, and a median one), then on the
grown vault the history (``bench/growthfill.py``), then a session with three recordings uploaded
over HTTP (the recording-URL load's target; the only audio in storage). Measured, for each engine,
the empty vault's server and the grown vault's alternately:

- the recording-URL endpoint under wrk (req/s, p99), as in the engines scenario;
- listing a tenant's sessions (``GET /api/v1/sessions``), the big tenant and the median one, and
  one recording's access history (``GET /api/v1/recordings/{id}/access``): sequential requests,
  median and worst;
- ``tapevault audit verify`` (wall time, records/s, peak RSS from ``wait4``);
- last, on the grown vault: the URL load again while ``tapevault purge`` removes the expired
  recordings, against the load just before it (p99 during vs without), and the purge's rate.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import data, fleet, pgdb
from bench.growthfill import Filled, Filler, Plan, open_sink
from bench.scenarios import Context, Result, Row, row, scenario, target
from bench.servers import HOST, BenchSetupError, free_port, proc_status_kib

# Servers never purge on their own timer here: the purge is measured when the harness says.
QUIET = {"TAPEVAULT_PURGE_INTERVAL": "3650d", "TAPEVAULT_WORKERS": "0"}
SMOKE_SCALE = 0.00002  # 40 sessions, 200 recordings, 1,000 access records
DEFAULT_SCALE = 0.01


def _log(message: str) -> None:
    print(f"[growth {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Vault:
    name: str
    deployment: fleet.Deployment
    database_url: str
    big: dict[str, Any]  # tenant create --json of the biggest tenant
    typical: dict[str, Any]
    token: str = ""  # a Suki token of the big tenant
    urls_path: str = ""
    live_recording: str = ""
    filled: Filled | None = None

    @property
    def data_dir(self) -> Path:
        return self.deployment.scratch / fleet.FIRST

    def env(self) -> dict[str, str]:
        return self.deployment.env(fleet.FIRST, free_port())


def reuse_vault(root: Path) -> Vault:
    """A vault ``python -m bench.growth fill`` made (its ``vault.json``), uploading the URL
    load's session if the fill did not."""
    made = json.loads((root / "vault.json").read_text())
    url = made["database_url"]
    shared = {} if url.startswith("sqlite") else {"TAPEVAULT_DATABASE_URL": url}
    deployment = fleet.Deployment(root, shared)
    deployment.cli("migrate")
    vault = Vault("grown", deployment, url, made["big"], made["typical"], made["token"])
    vault.filled = Filled(Plan(**made["plan"]), made["counts"], made["seconds"])
    vault.filled.big_tenant = made["big_tenant"]
    vault.filled.typical_tenant = made["typical_tenant"]
    vault.filled.hot_recording = made["hot_recording"]
    vault.filled.head_seq = made["head_seq"]
    vault.urls_path, vault.live_recording = made["urls_path"], made["live_recording"]
    if not vault.urls_path:
        _upload(vault)
    return vault


def _upload(vault: Vault) -> None:
    deployment, big = vault.deployment, vault.big
    node = deployment.start(TAPEVAULT_PURGE_INTERVAL=QUIET["TAPEVAULT_PURGE_INTERVAL"])
    try:
        api = data.Api(node.port, vault.token)
        session = fleet.url_session(api)
        vault.urls_path = fleet.urls_path(session)
        bearer = {"Authorization": f"Bearer {big['api_key']}"}
        status, _, body = api.request(
            "GET", f"/api/v1/sessions/{session}/recordings", headers=bearer
        )
        listed = json.loads(body)
        if status != 200:
            raise RuntimeError(f"listing the uploaded session: {status} {listed}")
        vault.live_recording = listed["recordings"][0]["recording_id"]
    finally:
        deployment.stop()


def make_vault(
    name: str,
    root: Path,
    database_url: str | None,
    plan: Plan | None,
    *,
    drop_indexes: bool = False,
    upload: bool = True,
) -> Vault:
    """A migrated vault with two tenants (and, with ``plan``, its history) and a session of
    three uploaded recordings."""
    shared = {"TAPEVAULT_DATABASE_URL": database_url} if database_url else {}
    deployment = fleet.Deployment(root, shared)
    deployment.cli("migrate")
    big = json.loads(deployment.cli("tenant", "create", "big", "--json"))
    typical = json.loads(deployment.cli("tenant", "create", "typical", "--json"))
    url = database_url or f"sqlite:///{root / fleet.FIRST / 'tapevault.db'}"
    vault = Vault(name, deployment, url, big, typical)
    if plan is not None:
        sink = open_sink(url)
        try:
            vault.filled = Filler(
                sink,
                url,
                plan,
                vault.data_dir / "audit-signing.pem",
                [big["partner_id"], typical["partner_id"]],
                drop_indexes=drop_indexes,
                log=lambda m: _log(f"{name}: {m}"),
            ).run()
        finally:
            sink.close()
    vault.token = deployment.cli("token", "issue", "--partner", big["partner_id"], "--ttl", "4h")
    if upload:
        _upload(vault)
    return vault


# --- measuring ---------------------------------------------------------------------------------


def latencies(port: int, path: str, headers: dict[str, str], count: int) -> dict[str, Any]:
    """``count`` sequential GETs on one kept-alive connection (after one unmeasured): ms."""
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    took: list[float] = []
    status = 0
    size = 0
    try:
        for i in range(count + 1):
            started = time.perf_counter()
            conn.request("GET", path, headers=headers)
            answer = conn.getresponse()
            body = answer.read()
            if i:
                took.append((time.perf_counter() - started) * 1000)
            status, size = answer.status, len(body)
    finally:
        conn.close()
    took.sort()
    return {
        "status": status,
        "bytes": size,
        "requests": count,
        "median_ms": statistics.median(took),
        "max_ms": took[-1],
        "p90_ms": took[min(len(took) - 1, int(len(took) * 0.9))],
    }


def reads(vault: Vault, port: int, count: int, hot: str | None) -> dict[str, Any]:
    def bearer(tenant: dict[str, Any]) -> dict[str, str]:
        return {"Authorization": f"Bearer {tenant['api_key']}"}

    out = {
        "list_big": latencies(port, "/api/v1/sessions", bearer(vault.big), count),
        "list_typical": latencies(port, "/api/v1/sessions", bearer(vault.typical), count),
        "access_live": latencies(
            port, f"/api/v1/recordings/{vault.live_recording}/access", bearer(vault.big), count
        ),
    }
    if hot:
        out["access_hot"] = latencies(
            port, f"/api/v1/recordings/{hot}/access", bearer(vault.big), count
        )
    for name, figures in out.items():
        if figures["status"] != 200:
            raise RuntimeError(f"{vault.name}: {name} answered {figures['status']}")
    return out


def run_timed(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """A command's wall time, exit status, output and peak RSS (KiB of ``VmHWM``, read from
    ``/proc`` every 50 ms until it exits: ``wait4``'s ``ru_maxrss`` would include the harness's
    own size, which the child had before its ``exec``)."""
    started = time.monotonic()
    peak = 0
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        while proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, BenchSetupError):  # it just exited
                peak = max(peak, proc_status_kib(proc.pid, "VmHWM"))
            time.sleep(0.05)
        out.seek(0)
        output = out.read()
    return {
        "seconds": time.monotonic() - started,
        "returncode": proc.returncode,
        "peak_rss_mib": peak / 1024,
        "output": output[-2000:],
    }


def verify(vault: Vault) -> dict[str, Any]:
    done = run_timed([sys.executable, "-m", "tapevault.cli", "audit", "verify"], vault.env())
    if done["returncode"] != 0:
        raise RuntimeError(f"{vault.name}: audit verify failed:\n{done['output']}")
    records = 0
    for line in done["output"].splitlines():
        if " record(s) from seq " in line:
            records = int(line.split(" ", 1)[0])
    done["records"] = records
    done["records_per_s"] = records / done["seconds"] if done["seconds"] else 0.0
    return done


def count_due(database_url: str) -> int:
    sink = open_sink(database_url)
    try:
        now = int(time.time() * 1000)
        return int(
            sink.execute(
                "SELECT count(*) FROM recordings WHERE status = 'available' AND expires_ms <= ?",
                (now,),
            )[0][0]
        )
    finally:
        sink.close()


@contextlib.contextmanager
def _purging(vault: Vault) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapevault.cli", "purge"],
        env=vault.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)


def purge_under_load(ctx: Context, vault: Vault) -> dict[str, Any]:
    """The URL load without a purge, then again while ``tapevault purge`` runs; how many it
    removed in that time."""
    due_before = count_due(vault.database_url)
    node = vault.deployment.start(**QUIET)
    try:
        url = node.base_url + vault.urls_path
        watch = {"server": [node.pid]}
        without = fleet.url_load(ctx.mode, ctx.tools["wrk"], [url], vault.token, watch)
        started = time.monotonic()
        with _purging(vault) as proc:
            time.sleep(min(2.0, ctx.mode.seconds / 2))
            during = fleet.url_load(ctx.mode, ctx.tools["wrk"], [url], vault.token, watch)
            finished = proc.poll() is not None
            elapsed = time.monotonic() - started
    finally:
        vault.deployment.stop()
    due_after = count_due(vault.database_url)
    purged = due_before - due_after
    return {
        "due_before": due_before,
        "purged": purged,
        "purge_finished": finished,
        "purge_seconds": elapsed,
        "purged_per_s": purged / elapsed if elapsed else 0.0,
        "without": without.figures(),
        "during": during.figures(),
    }


def measure_engine(ctx: Context, empty: Vault, grown: Vault, reads_count: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for vault in (empty, grown):
        node = vault.deployment.start(**QUIET)
        try:
            url = node.base_url + vault.urls_path
            load = fleet.url_load(ctx.mode, ctx.tools["wrk"], [url], vault.token, None)
            hot = vault.filled.hot_recording if vault.filled else None
            out[vault.name] = {"urls": load.figures(), **reads(vault, node.port, reads_count, hot)}
        finally:
            vault.deployment.stop()
    for vault in (empty, grown):
        out[vault.name]["verify"] = verify(vault)
    out["purge"] = purge_under_load(ctx, grown)
    out["fill"] = grown.filled.as_dict() if grown.filled else {}
    return out


def scale_for(mode_name: str) -> float:
    if mode_name == "smoke":
        return SMOKE_SCALE
    return float(os.environ.get("TAPEVAULT_BENCH_GROWTH_SCALE", DEFAULT_SCALE))


def sqlite_scale(scale: float) -> float:
    """SQLite's grown vault: ``TAPEVAULT_BENCH_GROWTH_SQLITE_SCALE``, else PostgreSQL's."""
    return float(os.environ.get("TAPEVAULT_BENCH_GROWTH_SQLITE_SCALE", scale))


def growth(ctx: Context) -> Result:
    scale = scale_for(ctx.mode.name)
    plan = Plan.scaled(scale)
    reads_count = 5 if ctx.mode.name == "smoke" else 50
    engines: dict[str, Any] = {}
    root = ctx.scratch / "growth"
    _log(f"scale {scale}: {plan}")
    with contextlib.ExitStack() as stack:
        urls: dict[str, str | None] = {"sqlite": None}
        if pgdb.pg_reachable():
            urls["postgresql"] = stack.enter_context(pgdb.pg_database("growth"))
            urls["postgresql_empty"] = stack.enter_context(pgdb.pg_database("growthempty"))
        for engine in ("sqlite", "postgresql"):
            if engine == "postgresql" and "postgresql" not in urls:
                continue
            empty_url = urls.get(f"{engine}_empty")
            empty = make_vault("empty", root / f"{engine}-empty", empty_url, None)
            started = time.monotonic()
            made = os.environ.get(f"TAPEVAULT_BENCH_GROWTH_{engine.upper()}_VAULT")
            if made and ctx.mode.name != "smoke":
                grown = reuse_vault(Path(made))  # made by ``python -m bench.growth fill``
            else:
                scaled = plan if engine == "postgresql" else Plan.scaled(sqlite_scale(scale))
                grown = make_vault("grown", root / f"{engine}-grown", urls[engine], scaled)
            _log(f"{engine}: grown vault ready in {time.monotonic() - started:.0f} s")
            engines[engine] = measure_engine(ctx, empty, grown, reads_count)
    return scenario(
        f"The vault as it grows (scale {scale}: {plan.recordings:,} recordings, "
        f"{plan.records:,} access records, {plan.expired:,} expired)",
        "the same figure on an empty vault (for the purge: the load without it), same run",
        {"scale": scale, "plan": plan.__dict__, "reads": reads_count, **engines},
        _rows(engines),
    )


def _rows(engines: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for engine, r in engines.items():
        e, g = r["empty"], r["grown"]
        pg = engine == "postgresql"
        rows += [
            row(
                f"{engine}: recording URLs, grown vs empty: req/s",
                "req/s",
                g["urls"]["req_per_s"],
                e["urls"]["req_per_s"],
                *([target("ratio", ">=", 0.9)] if pg else []),
            ),
            row(
                f"{engine}: recording URLs, grown vs empty: p99",
                "ms",
                g["urls"]["p99_ms"],
                e["urls"]["p99_ms"],
                *([target("ratio", "<=", 1.2)] if pg else []),
            ),
        ]
        for name, label in (
            ("list_big", "listing the big tenant's sessions"),
            ("list_typical", "listing a median tenant's sessions"),
            ("access_live", "a recording's access history (the loaded session's)"),
        ):
            rows.append(
                row(
                    f"{engine}: {label}, grown vs empty: median",
                    "ms",
                    g[name]["median_ms"],
                    e[name]["median_ms"],
                )
            )
        if "access_hot" in g:
            rows.append(
                row(
                    f"{engine}: an old recording's access history, grown, vs the empty "
                    "vault's recording: median",
                    "ms",
                    g["access_hot"]["median_ms"],
                    e["access_live"]["median_ms"],
                )
            )
        gv, ev = g["verify"], e["verify"]
        # The command's own start (imports, keys, the journal) is the empty vault's time: the
        # rate is the records beyond it over the seconds beyond it.
        extra_s = max(1e-3, gv["seconds"] - ev["seconds"])
        net = max(0, gv["records"] - ev["records"]) / extra_s
        rows += [
            row(
                f"{engine}: audit verify, grown ({gv['records']:,} records) vs empty: "
                "records/s beyond the empty vault's run",
                "records/s",
                net,
                ev["records_per_s"],
                target("value", ">=", 100_000),
            ),
            row(
                f"{engine}: audit verify, grown vs empty: peak RSS",
                "MiB",
                gv["peak_rss_mib"],
                ev["peak_rss_mib"],
                target("ratio", "<=", 1.2),
            ),
        ]
        p = r["purge"]
        rows.append(
            row(
                f"{engine}: recording URLs during the purge vs without: p99",
                "ms",
                p["during"]["p99_ms"],
                p["without"]["p99_ms"],
                target("ratio", "<=", 1.5),
            )
        )
        rows.append(
            row(
                f"{engine}: recording URLs during the purge vs without: req/s",
                "req/s",
                p["during"]["req_per_s"],
                p["without"]["req_per_s"],
            )
        )
    return rows


# --- python -m bench.growth fill -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.growth")
    sub = parser.add_subparsers(dest="command", required=True)
    fill = sub.add_parser("fill", help="make a vault with years of history")
    fill.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="1.0: the issue's")
    fill.add_argument("--data-dir", type=Path, required=True, help="a new directory")
    fill.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    fill.add_argument("--drop-indexes", action="store_true", help="drop, fill, recreate")
    fill.add_argument("--no-upload", action="store_true", help="no server, no audio")
    args = parser.parse_args(argv)
    plan = Plan.scaled(args.scale)
    _log(f"filling {args.data_dir} at scale {args.scale}: {plan}")
    started = time.monotonic()
    vault = make_vault(
        "grown",
        args.data_dir,
        args.database_url,
        plan,
        drop_indexes=args.drop_indexes,
        upload=not args.no_upload,
    )
    took = time.monotonic() - started
    assert vault.filled is not None
    text = json.dumps(
        {
            "wall_seconds": took,
            "data_dir": str(vault.data_dir),
            "database_url": vault.database_url,
            "big": {k: vault.big[k] for k in ("partner_id", "api_key")},
            "typical": {k: vault.typical[k] for k in ("partner_id", "api_key")},
            "token": vault.token,
            "urls_path": vault.urls_path,
            "live_recording": vault.live_recording,
            **vault.filled.as_dict(),
        },
        indent=2,
    )
    (args.data_dir / "vault.json").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
