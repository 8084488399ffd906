"""``python -m bench [--quick | --smoke] [--only NAME[,NAME] ...] [--out DIR]``, from the repo root.

Builds its own data in a temporary directory, starts tapevault, nginx and the framework floor on
127.0.0.1, loads them with wrk, curl and its own WebSocket generator (``bench/wsload.py``) for a
bounded time, times finalization in process, stops everything, writes
``bench/results/<timestamp>.json`` and prints a markdown table. Every figure is a ratio against a
reference measured in the same run. Needs nginx, wrk and curl; never installs anything.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import data, report
from bench.modes import MODES
from bench.scenarios import SCENARIOS, Context
from bench.servers import BenchSetupError, find_tools, free_port, start_nginx, start_tapevault
from bench.wrk import WrkError

RESULTS = Path(__file__).parent / "results"
# Scenarios whose figures stay meaningful with several server processes (memory and ingest read
# one process's /proc entries).
MULTI_PROCESS = ("recording_urls", "large_ranges", "seeks", "seeks_accel")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="about 6 minutes, 256 MiB file")
    which.add_argument("--smoke", action="store_true", help="seconds; checks the harness only")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME[,NAME]",
        help=f"run only these scenarios: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="tapevault server processes (TAPEVAULT_PROCESSES); the floor and nginx get as many. "
        f"With N > 1 only {', '.join(MULTI_PROCESS)} run (the others watch one process)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON result")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record py-spy (collapsed stacks) of the server during every ingest level, into DIR",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.processes <= 16:
        parser.error("--processes must be from 1 to 16")
    if args.only:
        args.only = [name for item in args.only for name in item.split(",") if name]
        unknown = sorted(set(args.only) - set(SCENARIOS))
        if unknown:
            parser.error(
                f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
            )
    if args.processes > 1:
        args.only = [name for name in args.only or MULTI_PROCESS if name in MULTI_PROCESS]
        if not args.only:
            parser.error(f"with --processes > 1 only {', '.join(MULTI_PROCESS)} can run")
    return args


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    tools = find_tools()
    if args.profile and shutil.which("py-spy") is None:
        raise BenchSetupError("--profile needs py-spy: pip install py-spy")
    started = time.monotonic()
    result: dict[str, Any] = {
        "mode": mode.name,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": report.machine(tools),
        "processes": args.processes,
        "not_measured": [],
        "scenarios": {},
    }
    with contextlib.ExitStack() as stack:
        scratch = Path(tempfile.mkdtemp(prefix="tapevault-bench-"))
        if not args.keep:
            stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        data_dir = scratch / "data"
        port = free_port()
        env = data.tapevault_env(data_dir, port)
        env["TAPEVAULT_PROCESSES"] = str(args.processes)
        _log(f"{mode.name} mode in {scratch}: creating a partner and starting tapevault")
        token = data.create_tenant(env)
        tapevault = start_tapevault(env, port, scratch / "tapevault.log")
        stack.callback(tapevault.stop)
        _log(f"uploading 3 short recordings and one of {mode.big_bytes >> 20} MiB")
        dataset = data.build(data.Api(port, token), data_dir, scratch, mode.big_bytes)
        nginx = start_nginx(
            tools["nginx"], scratch / "nginx", data_dir / "audio", free_port(), args.processes
        )
        stack.callback(nginx.stop)
        ctx = Context(
            mode, tools, tapevault, nginx, dataset, data_dir / "audio", scratch, args.profile, env
        )
        for name, scenario in SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            _log(f"scenario {name}")
            result["scenarios"][name] = scenario(ctx)
            if tapevault.proc.poll() is not None:
                raise BenchSetupError(f"tapevault exited during {name}:\n{tapevault.log_tail()}")
    result["seconds"] = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every server is stopped and the temp dir removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        result = run(args)
    except (BenchSetupError, WrkError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = report.write_json(result, args.out, stamp)
    report.print_summary(result, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
