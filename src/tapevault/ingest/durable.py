"""Durable live streams: append audio to a file, acknowledge only what is on disk.

Each live stream appends to its own file; a ``GroupCommitter`` makes everything written durable
in batches, at most ``interval`` apart, then tells each stream how many of its bytes are safe.
One batch costs one ``syncfs`` on the streams' filesystem, however many streams are open: this
machine does ~2,700 fdatasync/s (shared/notes/performance.md), so 1,000 streams synced
individually 5 times a second would not keep up, while one syncfs per batch does (it also makes
new files' directory entries durable). Where syncfs is not available each dirty file and the
directory are fsynced.

The event loop never writes a stream's file: ``append`` only buffers, and each batch hands every
stream's buffer to the committer's own thread, which writes them (one ``os.write`` per stream
per batch, the GIL released in each) and then syncs. Per-frame writes on the loop were a tenth of
its time, and writing the batch on the loop stalled it for ~10 ms at 800 streams, which showed
in every stream's ack latency.

An acknowledgement is never sent before its sync. A failed sync is never retried and then
acknowledged (after an fsync error the kernel may have dropped the dirty pages): every stream
written in that batch is failed, and its socket closed with the error. A failed write fails its
own stream.

Nor is an acknowledgement sent before this process has confirmed, after the sync, that it still
holds the stream (``held``: one database query per batch for every stream, see
``ingest/recovery.py``): another server may have taken the recording over and finalized the file
as it was then. A stream found taken over fails with ``StreamTakenOver`` and is acked no more;
when the check cannot be made (the database is unreachable) the bytes stay durable but unacked,
and the next batch asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger("tapevault.durable")

# An async send of {"type":"ack","bytes":N,"stored":M}: N bytes durable on this node's disk, the
# first M of them also in the object store (``tapevault.ingest.streamcopy``).
Ack = Callable[[int, int], Awaitable[None]]
# Given the keys of the streams about to be acked, the keys this process still holds; raises
# when it cannot tell. Runs in the committer's thread.
Held = Callable[[Sequence[str]], Collection[str]]

FINAL_ACK_SECONDS = 10.0
# How long ``finish`` waits for the ownership check when every byte is on disk but could not be
# confirmed (the database is unreachable) before it gives up acknowledging the rest.
CONFIRM_SECONDS = 10.0
# A stream with this much audio not yet handed to the file should stop reading until the next
# batch takes it (real time is ~3 KiB per batch; only a client far ahead of it gets here).
BACKLOG_BYTES = 64 * 1024


class StreamTakenOver(OSError):
    """Another process took the stream's recording over (recovery, after this one's lease
    lapsed): its audio is no longer this process's to acknowledge."""

    def __init__(self) -> None:
        super().__init__(errno.ESTALE, "stream taken over by recovery")


class CommitterStopped(OSError):
    """The group committer's task ended (cancelled at shutdown, or crashed) while a stream was
    waiting for a batch: nothing more of it will be written or acknowledged."""

    def __init__(self) -> None:
        super().__init__(errno.ESHUTDOWN, "the stream writer stopped")


class StreamUnconfirmed(OSError):
    """The stream is on disk, but whether this process still holds it could not be checked
    (the database did not answer) in time: the unconfirmed bytes are not acknowledged."""

    def __init__(self) -> None:
        super().__init__(errno.EAGAIN, "could not confirm the stream with the database")


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

    # The store-durable count last reported by ``copied``; an ack carries it with ``upto``.
    stored = 0

    def ack(self, upto: int) -> None:
        raise NotImplementedError

    def copied(self, stored: int) -> None:
        """The object store now holds the stream's first ``stored`` bytes (never more than
        were acked): a sink that speaks to a client sends an ack with both counts. Called on
        the event loop by the stream's copier, and must return at once like ``ack``."""
        self.stored = stored

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
    stream). Acks coalesce: a slow reader gets the latest counts, not a backlog."""

    def __init__(self, send: Ack) -> None:
        self.send = send
        self.latest = 0
        self._acked = 0
        self._acked_stored = 0
        self._task: asyncio.Task[None] | None = None

    def ack(self, upto: int) -> None:
        self.latest = upto
        self._kick()

    def copied(self, stored: int) -> None:
        self.stored = stored
        self._kick()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._acked < self.latest or self._acked_stored < self.stored:
            upto, stored = self.latest, self.stored
            try:
                await self.send(upto, stored)
            except Exception:
                return  # the client is gone; its reader will notice
            self._acked, self._acked_stored = upto, stored

    async def settle(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), FINAL_ACK_SECONDS)


class DurableStream:
    """One append-only stream file: the bytes received, and those synced.

    ``append`` only buffers (one ``bytearray`` extend); the committer's thread writes the buffer
    just before its sync, so nothing is lost that could have been acknowledged: an ack only ever
    covers synced bytes. A reader should stop taking audio while ``backlog`` is at least
    ``BACKLOG_BYTES`` (``GroupCommitter.drain``), which bounds memory per stream.
    """

    def __init__(self, path: Path, acks: AckSink, key: str | None = None) -> None:
        self.path = path
        self.key = key  # what the ownership check asks about (the recording id); None: no check
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.received = 0  # accepted by append
        self.durable = 0  # written and synced
        self.synced = 0  # durable and confirmed still ours, and so acknowledged
        self.stored = 0  # acknowledged and also in the object store (``ingest/streamcopy.py``)
        self.failed: OSError | None = None
        self.acks = acks
        self._buffer = bytearray()
        self._batch_done: asyncio.Event | None = None  # set after the next batch, if waited for
        self._in_flight = False  # the committer's thread holds this stream's fd and buffer
        self._close_after_batch = False

    @property
    def backlog(self) -> int:
        """Bytes received and not yet taken by a batch."""
        return len(self._buffer)

    def append(self, data: bytes) -> int:
        """Take ``data``; it reaches the file before the next sync, and is acked after it.
        Returns the backlog (one call per audio message, so no second one to ask)."""
        if self.failed is not None:
            raise self.failed
        buffer = self._buffer
        buffer += data
        self.received += len(data)
        return len(buffer)

    def close(self) -> None:
        """Close the file, once no batch is writing it (its fd must not be reused meanwhile)."""
        if self._in_flight:
            self._close_after_batch = True
            return
        with contextlib.suppress(OSError):
            os.close(self.fd)


class GroupCommitter:
    """Batches writes and syncs for every open stream of one event loop."""

    def __init__(
        self,
        directory: Path,
        interval: float = 0.1,
        held: Held | None = None,
        on_batch: Callable[[float], None] | None = None,
    ) -> None:
        self.directory = directory
        self.held = held  # the ownership check before acks; None: every stream is ours
        # Told each batch's seconds from the wake-up its audio caused to its acks (metrics).
        self.on_batch = on_batch
        self._held_failing = False
        # syncfs reports a write-back error to an fd opened before the error; one fd held open
        # from the start sees every error after it (Linux >= 5.8), whichever stream it hit.
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        # A thread of its own: in the shared pool a sync would queue behind uploads being
        # finalized and streams being closed, and every open stream's acks with it.
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tapevault-sync")
        self.interval = interval
        self._streams: set[DurableStream] = set()
        self._wake = asyncio.Event()
        # Called for every audio message: the Event's own method, no frame of ours around it.
        self.dirty: Callable[[], None] = self._wake.set
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    def open(self, path: Path, acks: AckSink | Ack, key: str | None = None) -> DurableStream:
        """A new stream at ``path``; ``acks`` is a sink, or an async ``send(upto)``; ``key``
        is what ``held`` is asked about before each ack."""
        sink = acks if isinstance(acks, AckSink) else TaskAcks(acks)
        stream = DurableStream(path, sink, key)
        self._streams.add(stream)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return stream

    async def drain(self, stream: DurableStream) -> None:
        """Wait until the stream's backlog is under ``BACKLOG_BYTES`` (or it failed)."""
        while stream.backlog >= BACKLOG_BYTES and stream.failed is None:
            await self._next_batch(stream)

    async def finish(self, stream: DurableStream) -> None:
        """Wait until everything received on ``stream`` is synced (and acknowledged), then drop
        it. Raises the error if a write or sync of it failed, ``StreamTakenOver`` if it was
        taken over, and ``StreamUnconfirmed`` if it is on disk but its ownership could not be
        checked within ``CONFIRM_SECONDS``."""
        loop = asyncio.get_running_loop()
        unconfirmed_since: float | None = None
        try:
            while stream.synced < stream.received and stream.failed is None:
                if stream.durable >= stream.received:
                    if unconfirmed_since is None:
                        unconfirmed_since = loop.time()
                    elif loop.time() - unconfirmed_since > CONFIRM_SECONDS:
                        raise StreamUnconfirmed()
                await self._next_batch(stream)
            if stream.failed is not None:
                raise stream.failed
            await stream.acks.settle()
        finally:
            self._streams.discard(stream)
            stream.close()

    async def _next_batch(self, stream: DurableStream) -> None:
        if stream._batch_done is None:
            stream._batch_done = asyncio.Event()
        event = stream._batch_done
        self._wake.set()
        # Wait for the batch, or for the committer to end: a committer cancelled at shutdown
        # sets no event, and a stream's cleanup waiting here would hang the loop's close.
        committer = self._task
        if committer is None or committer.done():
            raise CommitterStopped()
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait((waiter, committer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not event.is_set():
            raise CommitterStopped()

    async def _run(self) -> None:
        last = 0.0
        loop = asyncio.get_running_loop()
        while self._streams:
            await self._wake.wait()
            woke = time.monotonic()
            self._wake.clear()
            # Group commit: gather what arrives within one interval into one sync.
            delay = self.interval - (time.monotonic() - last)
            if delay > 0:
                await asyncio.sleep(delay)
            last = time.monotonic()
            # New audio to write, or durable audio still to be confirmed (the last check failed).
            batch = [s for s in self._streams if s.received > s.synced and s.failed is None]
            if batch:
                work: list[tuple[int, bytearray]] = []
                for stream in batch:
                    if stream._buffer:
                        buffer, stream._buffer = stream._buffer, bytearray()
                        work.append((stream.fd, buffer))
                        stream._in_flight = True
                upto = [stream.received for stream in batch]
                keys = [s.key for s in batch if s.key is not None] if self.held else []
                try:
                    failures, held = await loop.run_in_executor(
                        self._syncer, self._write_sync, work, keys
                    )
                except Exception as exc:  # the sync failed: nothing written in it is durable
                    log.error("sync failed for %d stream(s): %s", len(batch), exc)
                    error = _as_os_error(exc)
                    failures, held = {fd: error for fd, _ in work}, None
                self.batches += 1
                for stream, n in zip(batch, upto, strict=True):
                    self._settle(stream, n, failures.get(stream.fd), held)
                if self.on_batch is not None and held is not None and not failures:
                    self.on_batch(time.monotonic() - woke)
                if any(s.durable > s.synced and s.failed is None for s in batch):
                    self._wake.set()  # the check failed: ask again after the interval
            # Wake whoever waits for a batch; a stream of this batch may have finished meanwhile
            # and so no longer be listed.
            for stream in (*batch, *self._streams):
                if stream._batch_done is not None:
                    stream._batch_done.set()
                    stream._batch_done = None

    def _settle(
        self, stream: DurableStream, upto: int, failure: OSError | None, held: set[str] | None
    ) -> None:
        """After a batch: ``held`` is the keys confirmed still ours, None if the check failed."""
        stream._in_flight = False
        if stream._close_after_batch:
            stream.close()
        if failure is not None:
            stream.failed = failure
            stream.acks.fail(failure)
            return
        stream.durable = upto
        if stream.key is None or self.held is None or (held is not None and stream.key in held):
            stream.synced = upto
            stream.acks.ack(upto)
        elif held is not None:  # the check answered, without this stream: it was taken over
            log.warning("stream %s was taken over; acknowledging no more of it", stream.key)
            stream.failed = StreamTakenOver()
            stream.acks.fail(stream.failed)

    def _write_sync(
        self, work: list[tuple[int, bytearray]], keys: list[str]
    ) -> tuple[dict[int, OSError], set[str] | None]:
        """In the committer's thread: write each buffer, sync, then ask ``held`` about
        ``keys``. Returns the write errors by fd, and the keys still held (None if the check
        failed); raises if the sync fails. Only this thread ever writes streams' files."""
        failures: dict[int, OSError] = {}
        for fd, buffer in work:
            try:
                done = os.write(fd, buffer)
                while done < len(buffer):  # a short write (a signal, a nearly full disk)
                    done += os.write(fd, memoryview(buffer)[done:])
            except OSError as exc:
                log.error("write failed: %s", exc)
                failures[fd] = exc
        if work:
            self._sync([fd for fd, _ in work])
        return failures, self._check_held(keys)

    def _check_held(self, keys: list[str]) -> set[str] | None:
        """After the sync, so that whatever it confirms was on disk before any takeover."""
        if self.held is None or not keys:
            return set()
        try:
            held = set(self.held(keys))
        except Exception:
            if not self._held_failing:  # once per outage, not ten times a second
                log.exception("cannot confirm live streams; holding their acks")
            self._held_failing = True
            return None
        if self._held_failing:
            log.warning("live streams confirmed again; acks resume")
        self._held_failing = False
        return held

    def _sync(self, fds: list[int]) -> None:
        if _syncfs is not None:
            # Also makes new files' directory entries durable, which fdatasync would not.
            sync_filesystem(self._dir_fd)
            return
        for fd in fds:  # pragma: no cover - non-Linux
            os.fsync(fd)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _as_os_error(exc: BaseException) -> OSError:
    if isinstance(exc, OSError):
        return exc
    log.error("unexpected failure in the committer's thread", exc_info=exc)
    return OSError(errno.EIO, f"internal error: {exc!r}")
