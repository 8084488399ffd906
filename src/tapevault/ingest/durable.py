"""Durable live streams: append audio to a file, acknowledge only what is on disk.

Each live stream appends to its own file; a ``GroupCommitter`` makes everything written durable
in batches, at most ``interval`` apart, then tells each stream how many of its bytes are safe.
One batch costs one ``syncfs`` on the streams' filesystem, however many streams are open: this
machine does ~2,700 fdatasync/s (shared/notes/performance.md), so 1,000 streams synced
individually 5 times a second would not keep up, while one syncfs per batch does (it also makes
new files' directory entries durable). Where syncfs is not available each dirty file and the
directory are fsynced.

An acknowledgement is never sent before its sync. A failed sync is never retried and then
acknowledged (after an fsync error the kernel may have dropped the dirty pages): every stream in
that batch is failed, and its socket closed with the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger("tapevault.durable")

FINAL_ACK_SECONDS = 10.0


def _kernel_reports_syncfs_errors() -> bool:
    """syncfs returns write-back errors only since Linux 5.8; before that it always says 0."""
    try:
        major, minor = (int(part) for part in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 8)


_libc = ctypes.CDLL(None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None) if _kernel_reports_syncfs_errors() else None


def sync_filesystem(fd: int) -> None:
    """Flush the whole filesystem holding ``fd``; raises OSError on failure."""
    if _syncfs is None:  # pragma: no cover - non-Linux
        os.fsync(fd)
        return
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class DurableStream:
    """One append-only stream file with its written and synced byte counts."""

    def __init__(self, path: Path, on_ack: Callable[[int], Awaitable[None]]) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.written = 0
        self.synced = 0
        self.failed: OSError | None = None
        self.on_ack = on_ack
        self._synced_event = asyncio.Event()
        self._acked = 0
        self._acking: asyncio.Task[None] | None = None

    def acknowledge(self) -> None:
        """Send the client its ack from a task of its own, so a client that does not read
        never holds up the committer (and with it every other stream). Acks coalesce: a slow
        reader gets the latest count, not a backlog."""
        if self._acking is None or self._acking.done():
            self._acking = asyncio.get_running_loop().create_task(self._send_acks())

    async def _send_acks(self) -> None:
        while self._acked < self.synced and self.failed is None:
            upto = self.synced
            try:
                await self.on_ack(upto)
            except Exception:
                return  # the client is gone; its reader will notice
            self._acked = upto

    def append(self, data: bytes) -> None:
        """Write to the page cache now; durability comes with the next batch."""
        if self.failed is not None:
            raise self.failed
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.written += len(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class GroupCommitter:
    """Batches syncs for every open stream of one event loop."""

    def __init__(self, directory: Path, interval: float = 0.1) -> None:
        self.directory = directory
        # syncfs reports a write-back error to an fd opened before the error; one fd held open
        # from the start sees every error after it (Linux >= 5.8), whichever stream it hit.
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        # A thread of its own: in the shared pool a sync would queue behind uploads being
        # finalized and streams being closed, and every open stream's acks with it.
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tapevault-sync")
        self.interval = interval
        self._streams: set[DurableStream] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    def open(self, path: Path, on_ack: Callable[[int], Awaitable[None]]) -> DurableStream:
        stream = DurableStream(path, on_ack)
        self._streams.add(stream)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return stream

    def dirty(self) -> None:
        self._wake.set()

    async def finish(self, stream: DurableStream) -> None:
        """Wait until everything written to ``stream`` is synced (and acknowledged), then drop
        it. Raises the sync error if its last batch failed."""
        try:
            while stream.synced < stream.written and stream.failed is None:
                stream._synced_event.clear()
                self._wake.set()
                await stream._synced_event.wait()
            if stream.failed is not None:
                raise stream.failed
            if stream._acking is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(stream._acking), FINAL_ACK_SECONDS)
        finally:
            self._streams.discard(stream)
            stream.close()

    async def _run(self) -> None:
        last = 0.0
        while self._streams:
            await self._wake.wait()
            self._wake.clear()
            # Group commit: gather what arrives within one interval into one sync.
            delay = self.interval - (time.monotonic() - last)
            if delay > 0:
                await asyncio.sleep(delay)
            last = time.monotonic()
            batch = {s: s.written for s in self._streams if s.written > s.synced and not s.failed}
            if not batch:
                continue
            error: OSError | None = None
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._syncer, self._sync, list(batch)
                )
            except OSError as exc:
                error = exc
                log.error("sync failed for %d stream(s): %s", len(batch), exc)
            self.batches += 1
            for stream, upto in batch.items():
                if error is not None:
                    stream.failed = error
                else:
                    stream.synced = upto
                    stream.acknowledge()
                stream._synced_event.set()

    def _sync(self, streams: list[DurableStream]) -> None:
        if _syncfs is not None:
            # Also makes new files' directory entries durable, which fdatasync would not.
            sync_filesystem(self._dir_fd)
            return
        for stream in streams:  # pragma: no cover - non-Linux
            os.fsync(stream.fd)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
