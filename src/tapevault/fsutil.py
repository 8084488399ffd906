"""Small filesystem helpers shared by the store and the ingest paths."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from tapevault.errors import InsufficientStorage

#: What a full disk or a filesystem quota looks like from a write, fsync, rename or mkdir.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def fsync_dir(directory: Path) -> None:
    """Make a rename, create or unlink durable: the directory entry must reach the disk too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says the disk or a quota is full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in NO_SPACE:
            return True
        seen = seen.__cause__
    return False


@contextlib.contextmanager
def out_of_space_as_507(what: str) -> Iterator[None]:
    """Turn a full disk met while doing ``what`` into ``InsufficientStorage`` (a 507 that says
    so), so it is never an anonymous 500; any other ``OSError`` passes unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise InsufficientStorage(
                f"The server's disk is full: {what} was not kept. Retry later."
            ) from exc
        raise
