"""The checkpoint journal as a file: ``DATA_DIR/audit-checkpoints.log`` by default.

Opened with ``O_APPEND`` for every write, so a line can only be added at the end; each append is
one ``write`` and an ``fsync`` before the checkpoint counts. Processes sharing the file (several
server processes, the CLI) take an ``flock`` around "read the last line, link to it, append", so
the links stay one chain. The format and the checks are ``core/journal.py``'s.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tapevault.core.checkpoints import Checkpoint, CheckpointSigner, verify_checkpoint_signature
from tapevault.core.journal import GENESIS_LINK, MAX_LINE, format_line, line_hash, parse_line
from tapevault.fsutil import fsync_dir

TAIL_BYTES = 16 * 1024  # the newest ~50 lines: enough to find the newest checkpoint


def _tail(fd: int, size: int) -> list[str]:
    """The complete lines in the last ``TAIL_BYTES`` of the file (the first one may be cut)."""
    start = max(0, size - TAIL_BYTES)
    data = os.pread(fd, size - start, start)
    lines = data.decode(errors="replace").split("\n")
    if start > 0:
        lines = lines[1:]
    return lines


class CheckpointJournal:
    """``CheckpointWitness`` over an append-only file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, checkpoint: Checkpoint, signer: CheckpointSigner) -> str:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        created = not self.path.exists()
        fd = os.open(self.path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            lines = _tail(fd, size) if size else []
            out = ""
            if lines and lines[-1] != "":
                out = "\n"  # a torn last line (a crash mid-write): end it, and link past it
                prev = line_hash(lines[-1])
            else:
                prev = line_hash(lines[-2]) if len(lines) >= 2 else GENESIS_LINK
            line = format_line(checkpoint, prev, signer)
            os.write(fd, (out + line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
        if created:
            fsync_dir(self.path.parent)
        return line

    def newest(self, public_keys: Mapping[str, Ed25519PublicKey]) -> Checkpoint | None:
        # Unreadable counts as empty here: the append that follows fails and says so.
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            lines = _tail(fd, os.fstat(fd).st_size)
        except OSError:
            return None
        finally:
            os.close(fd)
        parsed = (parse_line(text, number) for number, text in enumerate(lines, start=1))
        candidates = sorted(
            (line.checkpoint for line in parsed if line is not None),
            key=lambda cp: cp.size,
            reverse=True,
        )
        # Largest first: usually the first signature checked is good (verifying them all cost
        # ~10 ms, before every checkpoint).
        for cp in candidates:
            if verify_checkpoint_signature(cp, public_keys):
                return cp
        return None


def read_text_lines(path: Path) -> Iterator[str]:
    """The file's lines, each at most ``MAX_LINE`` + 1 characters (a longer one is cut, so it
    fails to parse without being held in memory)."""
    with path.open("r", encoding="utf-8", errors="replace", newline="\n") as fh:
        while line := fh.readline(MAX_LINE + 1):
            if len(line) > MAX_LINE and not line.endswith("\n"):
                while (rest := fh.readline(64 * 1024)) and not rest.endswith("\n"):
                    pass
                if rest:
                    line += "\n"  # the line did end: not a partial last line
            yield line
