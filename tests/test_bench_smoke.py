"""The benchmark harness runs end to end: ``python -m bench --smoke`` in a subprocess.

Checks the shape of the JSON result only (every scenario, numeric figures, references and
ratios); smoke figures are meaningless, so nothing here asserts a timing. Skips without nginx,
wrk or curl, unless ``TAPEVAULT_TEST_STRICT=1``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
}
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
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    result = json.loads(path.read_text())

    assert result["mode"] == "smoke"
    assert result["machine"]["nproc"] >= 1
    assert set(result["scenarios"]) == SCENARIOS
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
