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

Ack = Callable[[int], Awaitable[None]]  # an async send of {"type":"ack","bytes":N}

FINAL_ACK_SECONDS = 10.0
FLUSH_BYTES = 32 * 1024  # a stream's buffer is written early once it holds this much


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


class AckSink:
    """Where a stream's acknowledgements go.

    The committer calls ``ack`` on the event loop right after the sync that made the first
    ``upto`` bytes durable (never before), and ``fail`` when the stream failed (a write or a
    sync): either must return at once, since it runs once per stream per batch for every open
    stream. ``GroupCommitter.finish`` awaits ``settle`` before it returns, so the final ack is
    out before the caller closes the connection.
    """

    def ack(self, upto: int) -> None:
        raise NotImplementedError

    def fail(self, error: OSError) -> None:
        """The stream's reader notices on its next append or in ``finish``; a sink that can
        end the connection at once may."""

    async def settle(self) -> None:
        """Wait (bounded) until the latest ack has been handed to the connection."""


class NoAcks(AckSink):
    """For a peer that reads no acks (Twilio): durability still comes from the group commit."""

    def ack(self, upto: int) -> None:
        pass


class TaskAcks(AckSink):
    """Acks through an async ``send`` (an ASGI connection), each burst from a task of its own,
    so a client that does not read never holds up the committer (and with it every other
    stream). Acks coalesce: a slow reader gets the latest count, not a backlog."""

    def __init__(self, send: Ack) -> None:
        self.send = send
        self.latest = 0
        self._acked = 0
        self._task: asyncio.Task[None] | None = None

    def ack(self, upto: int) -> None:
        self.latest = upto
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._acked < self.latest:
            upto = self.latest
            try:
                await self.send(upto)
            except Exception:
                return  # the client is gone; its reader will notice
            self._acked = upto

    async def settle(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), FINAL_ACK_SECONDS)


class DurableStream:
    """One append-only stream file: the bytes received, written to the file, and synced.

    ``append`` only buffers (one ``bytearray`` extend); the committer writes each stream's
    buffer with one ``os.write`` just before its sync. At 20 ms frames that is one write per
    five frames instead of one per frame (the write was a tenth of the event loop's time), and
    nothing is lost that could have been acknowledged: an ack only ever covers synced bytes.
    A buffer that reaches ``FLUSH_BYTES`` between batches (a client far ahead of real time) is
    written at once, so memory per stream stays bounded.
    """

    def __init__(self, path: Path, acks: AckSink) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.received = 0  # accepted by append: written, or buffered to be written
        self.written = 0  # in the file (the page cache)
        self.synced = 0  # durable, and so acknowledged
        self.failed: OSError | None = None
        self.acks = acks
        self._buffer = bytearray()
        self._finishing: asyncio.Event | None = None

    def append(self, data: bytes) -> None:
        """Take ``data``; it reaches the file before the next sync, and is acked after it."""
        if self.failed is not None:
            raise self.failed
        self._buffer += data
        self.received += len(data)
        if len(self._buffer) >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffer to the file; on failure the stream fails (and raises)."""
        if not self._buffer:
            return
        buffer, self._buffer = self._buffer, bytearray()
        try:
            done = os.write(self.fd, buffer)
            while done < len(buffer):  # a short write (a signal, a nearly full disk)
                done += os.write(self.fd, memoryview(buffer)[done:])
        except OSError as exc:
            self.failed = exc
            raise
        self.written = self.received

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

    def open(self, path: Path, acks: AckSink | Ack) -> DurableStream:
        """A new stream at ``path``; ``acks`` is a sink, or an async ``send(upto)``."""
        stream = DurableStream(path, acks if isinstance(acks, AckSink) else TaskAcks(acks))
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
            while stream.synced < stream.received and stream.failed is None:
                stream._finishing = event = asyncio.Event()
                self._wake.set()
                await event.wait()
            if stream.failed is not None:
                raise stream.failed
            await stream.acks.settle()
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
            batch = self._write_batch()
            if batch:
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
                        stream.acks.fail(error)
                    else:
                        stream.synced = upto
                        stream.acks.ack(upto)
            for stream in self._streams:
                if stream._finishing is not None:
                    stream._finishing.set()
                    stream._finishing = None

    def _write_batch(self) -> dict[DurableStream, int]:
        """Write every stream's buffer; the streams that have unsynced bytes in the file, with
        how many bytes the coming sync covers. A stream whose write fails is failed now."""
        batch: dict[DurableStream, int] = {}
        for stream in self._streams:
            if stream.received == stream.synced or stream.failed is not None:
                continue
            try:
                stream.flush()
            except OSError as exc:
                log.error("write failed for %s: %s", stream.path.name, exc)
                stream.acks.fail(exc)
                continue
            batch[stream] = stream.written
        return batch

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
