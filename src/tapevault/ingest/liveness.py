"""Which process owns a job lease or a live recording, and whether it still runs.

An owner id is ``host:pid:start`` where ``start`` is the process's start time in clock ticks since
boot (``/proc/PID/stat``), so a restarted container that gets the same pid again is still told
apart from the process that died.
"""

from __future__ import annotations

import os
import secrets
import socket

from tapevault.numbers import is_digits


def _start_ticks(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def process_id() -> str:
    """This process's owner id."""
    start = _start_ticks(os.getpid()) or secrets.token_hex(4)
    return f"{socket.gethostname()}:{os.getpid()}:{start}"


def is_gone(owner: str) -> bool:
    """True when ``owner`` is a process of this host that no longer runs. False when it runs,
    or when it is not ours to judge (another host, an id of another form)."""
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isascii():
        return False
    if not is_digits(parts[1]):
        return False
    pid = int(parts[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    start = _start_ticks(pid)
    return start is not None and start != parts[2]
