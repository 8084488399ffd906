"""Summarise a py-spy profile in collapsed-stack form (``py-spy record -f raw --threads``).

``python -m bench.profile FILE [N]`` prints, for the main thread (the event loop), the share of
its samples each function accounts for, inclusive (anywhere on the stack) and self (at the top),
and the share of samples in other threads. ``python -m bench --only ingest --profile DIR``
records one such file per ingest level.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_LOCATION = re.compile(r" \((.*?):\d+\)")
# Frames every main-thread sample shares: left out of the inclusive list.
_OUTER = re.compile(r"runpy|tapevault/cli\.py|uvicorn/(main|server|_compat)\.py|asyncio/runners")
# With nothing above it, this frame is the event loop itself (uvloop's C code and syscalls).
_LOOP = "Runner.run (asyncio/runners.py)"


def summarise(path: Path, top: int = 25) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    main = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if "MainThread" not in frames[0]:
            threads[";".join(f.split(" (")[0] for f in frames[-2:])] += n
            continue
        main += n
        names = [_LOCATION.sub(r" (\1)", f) for f in frames[1:]] or ["(no Python frame)"]
        for name in set(names):
            if not _OUTER.search(name):
                inclusive[name] += n
        own[names[-1] if names[-1] != _LOOP else "(event loop: uvloop C code, syscalls)"] += n
    if not main:
        return f"{path}: no main-thread samples"
    out = [f"{path}: {main} main-thread samples, {sum(threads.values())} in other threads"]
    out.append("\ninclusive (main thread):")
    out += [f"{100 * v / main:5.1f} %  {k}" for k, v in inclusive.most_common(top)]
    out.append("\nself (main thread):")
    out += [f"{100 * v / main:5.1f} %  {k}" for k, v in own.most_common(top)]
    out.append("\nother threads (share of main-thread samples):")
    out += [f"{100 * v / main:5.1f} %  {k}" for k, v in threads.most_common(8)]
    return "\n".join(out)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25))
