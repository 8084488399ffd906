"""The machine description, the JSON result file and the markdown table."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

_OPS = {">=": "≥", "<=": "≤"}


def machine(tools: dict[str, str]) -> dict[str, Any]:
    cpu = "unknown"
    mem_kib = 0
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    except (OSError, StopIteration, IndexError, ValueError):
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {
            name: _version(name)
            for name in ("tapevault", "uvicorn", "uvloop", "httptools", "starlette")
        },
        "tools": {name: _tool_version(path) for name, path in tools.items()},
        "source": _source(),
    }


def _source() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it (read-only git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "src_modified": None}
    return {"commit": commit or "unknown", "src_modified": bool(status.strip())}


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def _tool_version(path: str) -> str:
    flag = "-V" if path.endswith("nginx") else "--version"
    try:
        done = subprocess.run([path, flag], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def write_json(result: dict[str, Any], out_dir: Path, stamp: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def _number(value: float, unit: str) -> str:
    if unit in ("req/s", "streams", "× real time"):
        return f"{value:,.0f}"
    if unit == "GB/s":
        return f"{value:.2f}"
    if unit == "ms":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return f"{value:,.1f}"


def _ratio(value: float) -> str:
    """Three decimals below 10, so a ratio just under a bound does not print as the bound."""
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _target(t: dict[str, Any], unit: str) -> str:
    op = _OPS[t["op"]]
    if t["on"] == "ratio":
        return f"{op}{t['bound']:g}×"
    return f"{op}{t['bound']:,g} {unit}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| Scenario | Figure | tapevault | Reference | Ratio | Target | Met |",
        "|---|---|---|---|---|---|---|",
    ]
    for scenario in result["scenarios"].values():
        for i, r in enumerate(scenario["rows"]):
            name = f"{scenario['title']}<br>vs {scenario['reference_name']}" if i == 0 else ""
            unit = r["unit"]
            targets = ", ".join(_target(t, unit) for t in r["targets"]) or "—"
            met = {True: "yes", False: "**no**", None: ""}[r["met"]]
            figure = unit if r["label"] == unit else f"{r['label']} ({unit})"
            lines.append(
                f"| {name} | {figure} | {_number(r['value'], unit)} | "
                f"{_number(r['reference'], unit)} | {_ratio(r['ratio'])}× | {targets} | {met} |"
            )
    return "\n".join(lines)


def ingest_levels(result: dict[str, Any]) -> str:
    """Every ingest level run, with who used the CPU: server, generator, everything else."""
    scenario = result["scenarios"].get("ingest")
    if not scenario:
        return ""
    lines = [
        "| Frames | Server | Streams | Verdict | Ack p50 / p99 / max (ms) | End burst max (ms) "
        "| Server cores | µs/frame | KiB/stream | Generator cores (lag p99 ms) | Other cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, size in scenario["settings"]["frame_sizes"].items():
        for lv in [*size["levels"], size["floor"]]:
            lines.append(
                f"| {name} | {lv['kind']} | {lv['streams']:,} | {lv['verdict']} | "
                f"{lv['ack_p50_ms']:.0f} / {lv['ack_p99_ms']:.0f} / {lv['ack_max_ms']:.0f} | "
                f"{lv['end_ack_max_ms']:.0f} | "
                f"{lv['server_cores']:.2f} | {lv['server_cpu_us_per_frame']:.1f} | "
                f"{lv['kib_per_stream']:.1f} | {lv['generator_cores']:.2f} "
                f"({lv['lag_p99_ms']:.1f}) | {lv['other_cores']:.2f} |"
            )
    return "\n".join(lines)


def print_summary(result: dict[str, Any], path: Path) -> None:
    m = result["machine"]
    print(
        f"\ntapevault benchmarks, {result['mode']} mode, {result['seconds']:.0f} s; "
        f"{m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB; "
        f"{result.get('processes', 1)} server process(es); "
        f"commit {m['source']['commit'][:10]}"
        f"{' with local changes in src/' if m['source']['src_modified'] else ''}\n"
    )
    print(markdown(result))
    levels = ingest_levels(result)
    if levels:
        print(f"\nIngest levels:\n\n{levels}")
    print(f"\nresult: {path}", file=sys.stderr)
