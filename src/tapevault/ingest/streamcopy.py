"""Live streams' acknowledged audio, copied to the object store while they go on.

A stream's acks promise durability on its node's disk (``ingest/durable.py``); a node lost with
its disk would lose all of a live stream's audio. So every ``interval`` seconds (the setting
``TAPEVAULT_STREAM_UPLOAD_INTERVAL``) the part of each stream acknowledged since its last copy
is put in the store as the next part of its chain (``core/streamparts.py``), and the stream's
ack sink is told (``AckSink.copied``): the next ack says how many bytes the store holds. What the
loss of a whole node can lose is thereby bounded by one interval of audio (plus the time a copy
takes, or as long as the store is unreachable).

Never on the ack's path: the copier is a task of its own on the event loop that only decides
what to copy; the copies run on threads of their own (``THREADS``, not the committer's, nor the
shared pool), one copy at a time per stream, reading the spool with ``pread`` in 1 MiB chunks
(``NodeLocalDisk.promote_range``), at most ``MAX_PART`` a part. A slow or dead store delays
``stored``, never ``bytes``; memory is at most one part per copying thread, however long the
stream and however long the outage.

A copy that fails is retried after ``RETRY_SECONDS`` doubling up to the interval, with the
grown part (the same bytes from the same offset, and more); the failure counts in
``tapevault_stream_copy_failures`` and the acknowledged bytes not in the store in
``tapevault_stream_copy_behind_bytes``, and ``/healthz`` reports the streams' copies as failing
(``failing_since``) until one succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tapevault.core.ports import ObjectInfo
from tapevault.core.streamparts import part_key
from tapevault.ingest.durable import DurableStream

log = logging.getLogger("tapevault.streamcopy")

# Copies in flight per process. A PUT mostly waits for the store (a local store: ~11 ms a part
# here, S3 tens of ms), so a few threads keep up with 1,000 streams every 10 s (100 parts/s).
THREADS = 4
# The largest part: one PUT, never a multipart upload, so a copy holds at most this much in the
# store client's buffers; a stream further behind (after an outage) catches up part after part,
# without waiting an interval in between. Memory: THREADS x MAX_PART at worst.
MAX_PART = 8 * 1024 * 1024
RETRY_SECONDS = 1.0
GAUGE_SECONDS = 1.0  # the bytes-behind gauge is recomputed (a sum over the streams) this often

# (spool, key, offset, length) -> stores the range; runs on a copier thread.
CopyRange = Callable[[Path, str, int, int], ObjectInfo]


@dataclass(eq=False, slots=True)
class _Copy:
    stream: DurableStream
    recording_id: str
    spool: Path
    due: float  # loop time of the next copy
    in_flight: asyncio.Future[ObjectInfo] | None = None
    failures: int = 0
    failing_since: float | None = None  # wall-clock time of its first failure in a row


class StreamCopier:
    """Copies the acknowledged prefix of every stream it watches, at the interval."""

    def __init__(
        self,
        copy_range: CopyRange,
        interval: float,
        *,
        on_failure: Callable[[], None] | None = None,
        on_behind: Callable[[int], None] | None = None,
    ) -> None:
        self.copy_range = copy_range
        self.interval = max(float(interval), 0.0)  # 0: never (the close stores the stream)
        self.on_failure = on_failure  # counts failed copies (metrics)
        self.on_behind = on_behind  # told the bytes acked but not stored, over every stream
        self._copies: dict[DurableStream, _Copy] = {}
        # (due, tie-breaker, copy): the loop looks only at the copies that are due, not at every
        # stream each time it wakes (a wake per part copied, a hundred a second at 1,000
        # streams). Entries of released copies, or superseded ones, are skipped when popped.
        self._due: list[tuple[float, int, _Copy]] = []
        self._order = itertools.count()
        self._sleep_until = 0.0
        self._reported = -GAUGE_SECONDS
        self._pool: ThreadPoolExecutor | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.copies = 0

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def watch(self, stream: DurableStream, recording_id: str, spool: Path) -> None:
        """Copy ``stream`` (appended to ``spool``) every interval from now on."""
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        copy = _Copy(stream, recording_id, spool, loop.time() + self.interval)
        self._copies[stream] = copy
        self._schedule(copy)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())

    async def release(self, stream: DurableStream) -> None:
        """Copy no more of ``stream`` (it ended: its close puts the whole spool in the store),
        once a copy of it in flight is over: a part landing after the recording was finalized
        would outlive its cleanup."""
        copy = self._copies.pop(stream, None)
        self._wake.set()  # the last one gone: the task ends now, not an interval later
        if len(self._due) > 2 * len(self._copies) + 64:
            # Entries of ended streams hold their connections' objects until they come due:
            # drop them now and then (amortized, so churn does not pile them up).
            self._due[:] = [e for e in self._due if self._copies.get(e[2].stream) is e[2]]
            heapq.heapify(self._due)  # in place: the running loop holds this very list
        if copy is not None and copy.in_flight is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(copy.in_flight)
        self._report_behind(force=True)

    def _schedule(self, copy: _Copy) -> None:
        heapq.heappush(self._due, (copy.due, next(self._order), copy))
        if copy.due < self._sleep_until:
            self._wake.set()  # due before the loop meant to look again

    @property
    def failing_since(self) -> float | None:
        """Since when a watched stream's copies fail (the earliest of them), or None."""
        return min(
            (c.failing_since for c in self._copies.values() if c.failing_since), default=None
        )

    def behind(self) -> int:
        """Acknowledged bytes of the watched streams that the store does not hold yet."""
        return sum(max(c.stream.synced - c.stream.stored, 0) for c in self._copies.values())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = self._due
        while self._copies:
            self._wake.clear()
            now = loop.time()
            while due and due[0][0] <= now:
                when, _, copy = heapq.heappop(due)
                current = self._copies.get(copy.stream) is copy and copy.due == when
                if current and copy.in_flight is None:
                    self._start(copy, now)
            self._report_behind()
            self._sleep_until = due[0][0] if due else now + self.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(self._sleep_until - now, 0.001))
            self._sleep_until = 0.0

    def _start(self, copy: _Copy, now: float) -> None:
        stream = copy.stream
        if stream.failed is not None or stream.synced <= stream.stored:
            copy.due = now + self.interval  # nothing new acknowledged: look again later
            self._schedule(copy)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="tapevault-streamcopy")
        offset = stream.stored
        upto = min(stream.synced, offset + MAX_PART)
        key = part_key(copy.recording_id, offset)
        future = asyncio.get_running_loop().run_in_executor(
            self._pool, self.copy_range, copy.spool, key, offset, upto - offset
        )
        copy.in_flight = future
        future.add_done_callback(lambda done: self._finished(copy, upto, done))

    def _finished(self, copy: _Copy, upto: int, done: asyncio.Future[ObjectInfo]) -> None:
        copy.in_flight = None
        now = asyncio.get_running_loop().time()
        error = asyncio.CancelledError() if done.cancelled() else done.exception()
        was_failing = self.failing_since is not None
        if error is None:
            copy.failures = 0
            copy.failing_since = None
            self.copies += 1
            stream = copy.stream
            if upto > stream.stored:
                stream.stored = upto
                stream.acks.copied(upto)
            behind = stream.synced - stream.stored >= MAX_PART  # catching up: the next at once
            copy.due = now if behind else now + self.interval
            if was_failing and self.failing_since is None:
                log.warning("live streams' copies to the object store succeed again")
        else:
            copy.failures += 1
            copy.failing_since = copy.failing_since or time.time()
            copy.due = now + min(RETRY_SECONDS * 2 ** (copy.failures - 1), self.interval)
            if self.on_failure is not None:
                self.on_failure()
            if not was_failing:  # once per outage, not once per stream and retry
                log.warning(
                    "copying live stream %s to the object store failed (%s); acks go on "
                    "(durable on this node), retrying",
                    copy.recording_id,
                    error,
                )
        self._schedule(copy)

    def _report_behind(self, *, force: bool = False) -> None:
        if self.on_behind is None:
            return
        now = time.monotonic()
        if force or now - self._reported >= GAUGE_SECONDS:
            self._reported = now
            self.on_behind(self.behind())

    def close(self) -> None:
        """Stop the threads (at shutdown; copies in flight finish first)."""
        if self._task is not None:
            self._task.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
