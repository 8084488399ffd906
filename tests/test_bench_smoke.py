"""The benchmark harness runs end to end: ``python -m bench --smoke`` in a subprocess.

Checks the shape of the JSON result only (every scenario, numeric figures, references and
ratios); smoke figures are meaningless, so nothing here asserts a timing. Skips without nginx,
wrk or curl, unless ``TAPEVAULT_TEST_STRICT=1``; without PostgreSQL it runs and checks every
other scenario, then skips (or fails, strict) for the two that need it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.pgdb import pg_reachable

from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "recording_urls",
    "large_ranges",
    "seeks",
    "seeks_accel",
    "ttfb",
    "memory",
    "ingest",
    "finalization",
    "object_ranges",
    "two_nodes",
    "engines",
    "growth",
}
# These need PostgreSQL (a database made and dropped per run).
NEED_POSTGRES = {"two_nodes", "engines"}
_SBIN = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/local/sbin", "/usr/sbin"])

pytestmark = pytest.mark.server


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_smoke_mode_reports_every_scenario(tmp_path: Path) -> None:
    missing = [t for t in ("nginx", "wrk", "curl") if shutil.which(t, path=_SBIN) is None]
    need(
        not missing,
        f"benchmark tools missing: {', '.join(missing)} (apt-get install nginx-light wrk curl)",
    )
    expected = SCENARIOS if pg_reachable() else SCENARIOS - NEED_POSTGRES
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)]
        + ([] if expected == SCENARIOS else ["--only", ",".join(sorted(expected))]),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    result = json.loads(path.read_text())

    assert result["mode"] == "smoke"
    assert result["machine"]["nproc"] >= 1
    assert set(result["scenarios"]) == expected
    for name, scenario in result["scenarios"].items():
        assert scenario["reference_name"], name
        assert scenario["rows"], name
        for row in scenario["rows"]:
            for key in ("value", "reference", "ratio"):
                assert _number(row[key]), (name, row["label"], key, row[key])
            assert row["reference"] > 0, (name, row["label"])
            for target in row["targets"]:
                assert target["on"] in ("value", "ratio") and _number(target["bound"])
                assert isinstance(target["met"], bool)
    # The markdown table is printed with a line per row.
    rows = sum(len(s["rows"]) for s in result["scenarios"].values())
    assert done.stdout.count("\n|") >= rows + 1
    _check_scale_out(result["scenarios"])
    need(
        expected == SCENARIOS,
        f"PostgreSQL not reachable: {', '.join(sorted(NEED_POSTGRES))} not run",
    )


def _check_scale_out(scenarios: dict[str, Any]) -> None:
    """The scale-out scenarios keep, besides their rows, the figures a reader needs to tell what
    bounded them: the CPU of every party over every run, and each run's wrk figures."""
    ranges = scenarios["object_ranges"]
    stores = [k for k in ("s3", "azure") if isinstance(ranges["settings"][k], dict)]
    assert "s3" in stores
    for store in stores:
        spans = {k: v for k, v in ranges["settings"][store].items() if isinstance(v, dict)}
        assert len(spans) == 2, spans.keys()
        for span in spans.values():
            for side in ("direct", "gateway"):
                assert span[side]["requests"] > 0
                assert {"store", "tapevault", "load", "machine"} <= set(span[side]["cores"])
    large = [r for r in ranges["rows"] if r["targets"]]
    assert [t["bound"] for r in large for t in r["targets"]] == [0.8] * len(stores)
    if "two_nodes" in scenarios:
        nodes = scenarios["two_nodes"]
        for run in ("one_node_behind_nginx", "two_nodes_behind_nginx", "two_nodes_two_wrk"):
            figures = nodes["settings"][run]
            assert figures["requests"] > 0 and _number(figures["cores"]["postgres"]), run
        # The balanced run really reached both nodes.
        assert nodes["settings"]["two_nodes_behind_nginx"]["cores"]["node_b"] > 0
    if "engines" in scenarios:
        engines = scenarios["engines"]["settings"]
        for engine in ("sqlite", "postgresql"):
            assert set(engines[engine]) == {"on_1", "off_1", "on_2"}
        assert isinstance(engines["integration_delay"]["measured"], bool)
