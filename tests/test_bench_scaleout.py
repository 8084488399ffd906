"""The pure parts of the scale-out benchmark scenarios (``bench/engines.py``, ``bench/fleet.py``):
the reading of a histogram between two ``/metrics`` scrapes (the "durable → integrated" row's
hook), the nginx front's configuration, checked by nginx itself (``nginx -t``), and the cleanup
of the PostgreSQL databases a killed harness leaves behind."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from bench import pgdb
from bench.engines import INTEGRATION_METRIC, histogram_buckets, quantile_bound
from bench.fleet import front_conf
from bench.pgdb import pg_reachable

from tests.conftest import need

NAME = INTEGRATION_METRIC


def exposition(counts: dict[str, float], labels: str = "") -> str:
    """A Prometheus text exposition of one histogram with the given cumulative counts."""
    lines = [f"# HELP {NAME} Seconds.", f"# TYPE {NAME} histogram"]
    for le, count in counts.items():
        sep = "," if labels else ""
        lines.append(f'{NAME}_bucket{{{labels}{sep}le="{le}"}} {count}')
    total = counts["+Inf"]
    lines += [f"{NAME}_count{{{labels}}} {total}", f"{NAME}_sum{{{labels}}} 1.5"]
    return "\n".join(lines) + "\n"


def test_buckets_are_summed_over_label_sets_and_other_metrics_ignored() -> None:
    text = (
        exposition({"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}, 'node="a"')
        + exposition({"0.1": 4.0, "1.0": 4.0, "+Inf": 5.0}, 'node="b"')
        + 'http_server_request_duration_seconds_bucket{le="0.1"} 99.0\n'
        + f'{NAME}_bucketx{{le="0.1"}} 7.0\n'
    )
    assert histogram_buckets(text, NAME) == {0.1: 5.0, 1.0: 6.0, math.inf: 8.0}


def test_absent_metric_reads_as_no_observations() -> None:
    assert histogram_buckets("# nothing here\n", NAME) == {}
    assert quantile_bound({}, {}, 0.99) is None
    same = histogram_buckets(exposition({"0.5": 3.0, "+Inf": 3.0}), NAME)
    assert quantile_bound(same, same, 0.99) is None


def test_quantile_counts_only_observations_between_the_scrapes() -> None:
    # Before: 100 slow observations (above 1 s). During the load: 1,000 more, all under 0.25 s
    # except 5 between 0.25 s and 0.5 s. The p99 of the load is under 0.25 s, although the
    # histogram's lifetime p99 would be past 1 s.
    before = {0.25: 0.0, 0.5: 0.0, 1.0: 0.0, math.inf: 100.0}
    after = {0.25: 995.0, 0.5: 1000.0, 1.0: 1000.0, math.inf: 1100.0}
    assert quantile_bound(before, after, 0.99) == (0.25, 1000)
    assert quantile_bound(before, after, 0.999) == (0.5, 1000)


def test_quantile_past_the_largest_bucket_is_infinite() -> None:
    assert quantile_bound({}, {1.0: 1.0, math.inf: 10.0}, 0.99) == (math.inf, 10)


def test_front_conf_is_valid_nginx_with_one_server_per_port(tmp_path: Path) -> None:
    conf = front_conf(tmp_path, {18001: [19001], 18002: [19001, 19002]})
    assert conf.count("listen 127.0.0.1:") == 2
    assert "server 127.0.0.1:19002;" in conf.split("upstream nodes1")[1]
    assert "server 127.0.0.1:19002;" not in conf.split("upstream nodes1")[0]
    # Suki's token header has an underscore: nginx drops such headers unless told otherwise.
    assert "underscores_in_headers on;" in conf
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    nginx = shutil.which("nginx", path=search)
    need(nginx is not None, "nginx not installed (apt-get install nginx-light)")
    assert nginx is not None
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    done = subprocess.run(
        [nginx, "-t", "-c", str(path), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_quantile_bound_is_an_upper_bound_of_the_true_quantile(q: float) -> None:
    # 1,000 observations spread evenly over (0, 1] s, bucketed by tenths.
    values = [(i + 1) / 1000 for i in range(1000)]
    bounds = [round(b / 10, 1) for b in range(1, 11)]
    after = {b: float(sum(v <= b for v in values)) for b in bounds}
    after[math.inf] = 1000.0
    found = quantile_bound({}, after, q)
    assert found is not None
    bound, count = found
    true = sorted(values)[math.ceil(q * count) - 1]
    assert true <= bound < true + 0.1 + 1e-9


def test_a_database_left_by_a_killed_harness_is_dropped_by_the_next_run() -> None:
    """A harness killed outright (SIGKILL: no ``finally``) leaves its database; the next run on
    the machine drops it, and never one whose harness is still alive (another engineer's)."""
    need(pg_reachable(), f"PostgreSQL not reachable at {pgdb.PG_ADMIN_URL}")
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = f"tapevault_bench_killed_{gone.pid}_{uuid.uuid4().hex[:8]}"
    alive = f"tapevault_bench_running_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with pgdb._admin() as conn:
        for name in (orphan, alive):
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with pgdb.pg_database("next") as url:
            assert url.rsplit("/", 1)[1].startswith(f"tapevault_bench_next_{os.getpid()}_")
            assert set(databases()) & {orphan, alive} == {alive}
        assert not [name for name in databases() if "_next_" in name]
    finally:
        with pgdb._admin() as conn:
            for name in (orphan, alive):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def databases() -> list[str]:
    with pgdb._admin() as conn:
        rows = conn.execute("SELECT datname FROM pg_database").fetchall()
    return [name for (name,) in rows]
