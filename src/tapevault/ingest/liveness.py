"""Which process owns a job lease or a live recording, and whether it still runs.

An owner id is ``NODE:PID:START``. ``NODE`` names the node: the data directory a process works
in, whose disk holds its live streams' spools (``node_name``: the host's name and a random tag,
kept in ``DATA_DIR/node-id``, so a restarted process on the same disk is the same node, and two
data directories on one host are two nodes). ``START`` is the process's start time in clock
ticks since boot (``/proc/PID/stat``), so a restarted container that gets the same pid again is
still told apart from the process that died.

Only a process of the same node can tell whether an owner still runs (by its pid); an owner of
another node is judged by its lease alone. Owner ids written before nodes had names begin with
the bare host name, and are judged by pid on that host as before.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import stat
from pathlib import Path

from tapevault.fsutil import fsync_dir
from tapevault.numbers import is_digits

NODE_FILE = "node-id"
# No ":" (it separates an owner id's parts) and no "~" or "/" (owner ids go into file names).
_NODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_+")
MAX_NODE = 80  # an owner id (node, pid, start) fits the 120 characters of its columns


def _start_ticks(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def node_name(data_dir: Path) -> str:
    """This data directory's node name: read from ``DATA_DIR/node-id``, made once. The name is
    written whole to a file of its own and then linked into place (``link`` fails when the name
    exists), so processes starting together agree on one and none reads a half-written one."""
    path = data_dir / NODE_FILE
    try:
        name = _read_name(path)
    except FileNotFoundError:
        host = "".join(c if c in _NODE_CHARS and c != "+" else "-" for c in _host())[:60]
        fresh = data_dir / f".{NODE_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            with fresh.open("x") as f:
                f.write(f"{host}+{secrets.token_hex(4)}\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process of this node won
                os.link(fresh, path)
        finally:
            fresh.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            fsync_dir(data_dir)
        name = _read_name(path)
    if not name or len(name) > MAX_NODE or not set(name) <= _NODE_CHARS:
        raise ValueError(f"{path} does not hold a node name (delete it to make a new one)")
    return name


def _read_name(path: Path) -> str:
    """The file's text, stripped: a regular file only, read without blocking and no further
    than a name can be long (a FIFO or a link to /dev/zero must not hang or exhaust the start)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file (delete it to make a new node name)")
        raw = os.read(fd, MAX_NODE + 2)
    finally:
        os.close(fd)
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return ""  # not a name: refused by the caller's check


def _host() -> str:
    return socket.gethostname()


def process_id(node: str | None = None) -> str:
    """This process's owner id, on ``node`` (by default the bare host name)."""
    start = _start_ticks(os.getpid()) or secrets.token_hex(4)
    return f"{node or _host()}:{os.getpid()}:{start}"


def node_of(owner: str | None) -> str | None:
    """The node part of an owner id (None for anything else)."""
    if owner is None:
        return None
    parts = owner.split(":")
    return parts[0] if len(parts) == 3 and parts[0] else None


def spool_node(owner: str | None) -> str | None:
    """The named node of an owner id: the one whose disk holds what that process wrote (None
    for an id of an older version, which names only its host)."""
    node = node_of(owner)
    return node if node is not None and "+" in node else None


def is_gone(owner: str, me: str | None = None) -> bool:
    """True when ``owner`` is a process of this node (``me``'s; by default, of this host under
    its bare name) that no longer runs. False when it runs, or when it is not ours to judge
    (another node, another host, an id of another form)."""
    parts = owner.split(":")
    if len(parts) != 3 or not parts[1].isascii() or not is_digits(parts[1]):
        return False
    here = node_of(me) if me is not None else None
    # A bare host name is an id of an older version, of this host: judged by pid as before.
    if parts[0] != _host() and parts[0] != here:
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
