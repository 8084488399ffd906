"""The access log as tapevault runs it: batched, durable, chained, checkpointed.

``AuditLog`` is the ``AccessLog`` of a production process. One writer thread owns every write:
callers queue an event and, when the rule says the record must exist before the answer (a URL
issued, audio served, a deletion), wait for the batch that holds it to commit. Whatever queued
while the previous batch was committing goes into the next one, so under load one transaction
and one sync carry many records (group commit), and the hot paths pay a queue hand-off and a
wake-up, not a commit each.

If a cycle fails for any reason (the store raising, the lock file refused with EMFILE, a bug),
everyone waiting on it gets ``Unavailable`` (the request answers 503 and serves nothing), the log
reports itself unhealthy, and the writer carries on: it tries again after a back-off (50 ms
doubling to 2 s), refusing at once whoever waits meanwhile, and is healthy again after its next
successful cycle (one that had nothing to write probes the store instead). Events nobody waits
for are kept and retried (up to a bound), so a short outage loses none. No waiter waits more than
``wait_seconds``: a writer stuck in the store (a lock never granted) turns into 503s and an
unhealthy log, not hung requests.

What the writer commits is *durable*, not yet *integrated*: it has no ``seq`` and no hash. The
deployment's one integrator (``core/integrator.py``; every process runs one, one holds the role)
sequences, chains and adds it to the Merkle tree within ``integrate_seconds`` and signs the
checkpoints; this class starts it and hands it ``flush``/``checkpoint``. The writer also folds
playbacks (see ``core/playback.py``).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Protocol

from tapevault.core.access import AccessEvent, Action
from tapevault.core.audit import AuditEntry, AuditRecord
from tapevault.core.checkpoints import Checkpoint, CheckpointSigner
from tapevault.core.clock import Clock, now_ms
from tapevault.core.integrator import IntegrationStore, Integrator
from tapevault.core.journal import CheckpointWitness
from tapevault.core.refusals import Refusals
from tapevault.errors import Unavailable

log = logging.getLogger("tapevault.audit")

UNAVAILABLE = "The access log cannot be written; nothing was served. Retry shortly."
MAX_RETAINED = 100_000  # unwaited events kept for retry while the store is down
WAIT_SECONDS = 10.0  # the longest a request waits for its record before it answers 503
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0  # seconds between the writer's tries while failing
# Records of the event loop that nobody waits for (URL issuance under the default
# TAPEVAULT_AUDIT_DURABLE=media, refusals) reach the writer at most this much later, together:
# one queue hand-over and one writer wake-up per few milliseconds under load instead of one
# per loop iteration, which cost the loop and the writer more than the records themselves
# (BENCHMARKS.md, issue 14). A record somebody waits for takes everything queued with it at
# the end of its loop iteration, as before.
LINGER_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class Pending:
    """A playback being folded: durable from before its first byte until it is sealed."""

    playback_id: str
    owner: str
    entry: AuditEntry
    opened_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class LogState:
    first_seq: int
    first_prev_hash: str
    head_seq: int
    head_hash: str


@dataclass(frozen=True, slots=True)
class Query:
    """Filters of a log read; ``tenant_id`` None reads every tenant (the operator's export)."""

    tenant_id: str | None
    session_id: str | None = None
    recording_id: str | None = None
    actor_id: str | None = None
    action: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    after_seq: int = 0
    limit: int = 100
    # With both ids set: the recording's records *and* its session's records that name no
    # recording (URLs issued for the whole session): one recording's access history.
    history: bool = False


class AuditStore(IntegrationStore, Protocol):
    def write(
        self,
        entries: Sequence[AuditEntry],
        *,
        opened: Sequence[Pending] = (),
        updated: Sequence[Pending] = (),
        closed: Sequence[str] = (),
    ) -> None:
        """Make ``entries`` durable (not yet integrated) with the playbacks' changes, at once."""
        ...

    def exclusive(self) -> AbstractContextManager[None]:
        """Hold the right to append (across processes) for a whole cycle; re-entrant for
        ``write`` within it."""
        ...

    def state(self) -> LogState: ...

    def record(self, seq: int) -> AuditRecord | None: ...

    def last_tree_checkpoint(self) -> Checkpoint | None: ...

    def query(self, q: Query) -> list[AuditRecord]: ...

    def pending(self) -> list[Pending]: ...

    def prune(self, before_ms: int) -> int: ...

    def probe(self) -> None:
        """Raise if an append could not be written now (a write that changes nothing)."""
        ...


def clean(text: str | None, limit: int) -> str | None:
    """Text as the log stores it: bounded, and without NUL (which PostgreSQL text refuses)."""
    if text is None or (len(text) <= limit and "\x00" not in text):
        return text
    return text[:limit].replace("\x00", "\ufffd")


def to_entry(event: AccessEvent) -> AuditEntry:
    """An access event as a log entry: ids only, every text bounded (hostile input arrives here:
    a 10 kB provider id must not make the write fail and the request 503). Written out field by
    field: this runs for every audited request."""
    actor = event.actor
    return AuditEntry(
        at_ms=event.at_ms,
        action=event.action.value,
        status=event.status,
        tenant_id=clean(actor.partner_id, 64),
        actor_kind=clean(actor.kind, 20),
        actor_id=clean(actor.token_id, 200),
        provider_id=clean(actor.provider_id, 200),
        session_id=clean(event.session_id, 64),
        recording_id=clean(event.recording_id, 64),
        mode=clean(event.mode, 20),
        ranges=tuple((int(a), int(b)) for a, b in event.ranges) if event.ranges else (),
        bytes_sent=event.bytes_sent,
        error=clean(event.error, 1000),
        client_ip=clean(actor.client_ip, 64),
        user_agent=clean(actor.user_agent, 512),
        request_id=clean(actor.request_id, 128),
        detail=event.detail,
    )


Sealed = tuple[str, AuditEntry]  # (playback id, its one record)


@dataclass
class _Batch:
    entries: list[AuditEntry] = field(default_factory=list)
    waiters: list[concurrent.futures.Future[None] | asyncio.Future[None]] = field(
        default_factory=list
    )
    unwaited: list[AuditEntry] = field(default_factory=list)
    opened: list[Pending] = field(default_factory=list)
    updated: list[Pending] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    oldest_ms: int | None = None  # the oldest record queued or retried into it (lag)


@dataclass(frozen=True, slots=True)
class _Item:
    entry: AuditEntry | None = None
    # Who waits: a thread (a concurrent future) or a coroutine (a future of the event loop,
    # resolved with one wake-up of that loop per batch, not one per request).
    waiter: concurrent.futures.Future[None] | asyncio.Future[None] | None = None
    opened: Pending | None = None


def _settle(futures: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    """On the event loop: resolve a batch's waiting requests at once."""
    for future, error in futures:
        if future.done():
            continue  # the request was cancelled (client gone) meanwhile
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class AuditCounts(Protocol):
    """Told after every writer cycle (a few a second, never per request): the metrics
    adapter (``tapevault.observe``) turns it into gauges; the core knows no metrics library."""

    def cycle(self, *, queued: int, lag_seconds: float, failed: bool) -> None:
        """``queued``: records waiting (kept for retry, plus hand-overs queued);
        ``lag_seconds``: how old the oldest record of the cycle was when it ended."""
        ...


class _NoCounts:
    def cycle(self, *, queued: int, lag_seconds: float, failed: bool) -> None:
        pass


class Folder(Protocol):
    """What the writer asks of the playback folder on every tick (core/playback.py)."""

    def due(
        self, now_ms: int, *, final: bool
    ) -> tuple[list[Pending], list[tuple[str, AuditEntry]]]:
        """(pending rows to refresh, (playback id, sealed entry) to append and close)."""
        ...


class AuditLog:
    """The durable ``AccessLog``; see the module docstring."""

    def __init__(
        self,
        store: AuditStore,
        clock: Clock,
        signer: CheckpointSigner | None,
        *,
        checkpoint_seconds: float = 5.0,
        tick_seconds: float = 1.0,
        after_answer: frozenset[Action] = frozenset(),
        witness: CheckpointWitness | None = None,
        integrate_seconds: float = 0.1,
    ) -> None:
        self.store = store
        self.clock = clock
        self.signer = signer
        self.integrator = Integrator(
            store,
            clock,
            signer,
            interval=integrate_seconds,
            checkpoint_seconds=checkpoint_seconds,
            witness=witness,
        )
        self.tick_seconds = tick_seconds
        self.wait_seconds = WAIT_SECONDS
        # Actions whose record may be committed just after the answer (group-committed within a
        # writer cycle, not waited for): TAPEVAULT_AUDIT_DURABLE=media puts URL issuance here.
        # While the log is failing they are refused all the same.
        self.after_answer = after_answer
        self.folder: Folder | None = None
        self.counts: AuditCounts = _NoCounts()
        self.refusals = Refusals()
        self._queue: queue.SimpleQueue[_Item | list[_Item] | None] = queue.SimpleQueue()
        # Requests of the event loop queue here first and reach the writer as one hand-over
        # per loop iteration (one queue put, one wake-up of the writer).
        self._loop_items: list[_Item] = []
        self._hand_over_at: asyncio.Handle | None = None  # the hand-over scheduled, if any
        self._hand_over_soon = False  # ... for the end of this loop iteration (somebody waits)
        self._hand_over_loop: asyncio.AbstractEventLoop | None = None
        self.linger_seconds = LINGER_SECONDS
        # The loop's waiting requests by hand-over, oldest first, each group with its deadline:
        # what ``_expire`` fails with 503 if the writer has not answered them in time.
        self._expiring: collections.deque[tuple[float, list[asyncio.Future[None]]]] = (
            collections.deque()
        )
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_loop: asyncio.AbstractEventLoop | None = None
        # Unwaited records kept while the store fails, oldest first; past the bound the oldest
        # go (counted in ``_dropped`` and reported once the log is writable again).
        self._retry: collections.deque[AuditEntry] = collections.deque(maxlen=MAX_RETAINED)
        self._retry_closed: list[str] = []
        self._dropped = 0
        self._healthy = True
        self._busy_since: float | None = None  # monotonic start of the cycle under way
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._folded_ms = -(2**62)  # the log's clock (ms) when playbacks were last folded

    # --- the AccessLog protocol ---------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """False from a failed cycle until the next successful one, and while a cycle has been
        stuck in the store for longer than a request may wait."""
        busy = self._busy_since
        return self._healthy and (busy is None or time.monotonic() - busy < self.wait_seconds)

    def record(self, event: AccessEvent) -> None:
        """Queue; never blocks, never raises. Anonymous refusals past the first of their source
        are counted instead (``core/refusals.py``) and written as one record a window."""
        if self.refusals.admit(event):
            self._queue.put(_Item(entry=to_entry(event)))
            self._ensure_running()

    def commit(self, event: AccessEvent) -> None:
        """Write durably before returning; raises ``Unavailable`` when it cannot, or when the
        writer has not confirmed it within ``wait_seconds``."""
        waiter: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._submit(_Item(entry=to_entry(event), waiter=waiter))
        try:
            waiter.result(self.wait_seconds)
        except TimeoutError:
            raise Unavailable(UNAVAILABLE) from None

    def commit_many(self, events: Sequence[AccessEvent]) -> None:
        """``commit`` for several events at once: all are submitted, then all waited for, so
        they share one writer cycle (one transaction, one sync) instead of one each. Fails
        closed like ``commit``: ``Unavailable`` unless every one is confirmed in time."""
        if not events:
            return
        waiters = [concurrent.futures.Future[None]() for _ in events]
        items = [_Item(entry=to_entry(e), waiter=w) for e, w in zip(events, waiters, strict=True)]
        # One hand-over: the writer drains a list whole, so the batch is never split between
        # two cycles (and never waits behind a cycle of its own first half).
        self._queue.put(items)
        self._ensure_running()
        _, late = concurrent.futures.wait(waiters, self.wait_seconds)
        if late:
            raise Unavailable(UNAVAILABLE)
        for waiter in waiters:
            waiter.result()  # the writer's Unavailable, if the cycle failed

    async def commit_async(self, event: AccessEvent) -> None:
        if event.action in self.after_answer:
            if not self.healthy:
                raise Unavailable(UNAVAILABLE)
            self._on_loop(_Item(entry=to_entry(event)))  # not waited for, but still batched
            return
        await self._submit_async(entry=to_entry(event))

    async def open_pending(self, pending: Pending) -> None:
        """Make a playback's pending record durable (before its first byte is sent)."""
        await self._submit_async(opened=pending)

    def _submit_async(
        self, *, entry: AuditEntry | None = None, opened: Pending | None = None
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_loop(_Item(entry=entry, opened=opened, waiter=future))
        return future

    def _on_loop(self, item: _Item) -> None:
        """On the event loop: queue ``item`` with the rest of this loop iteration's; one that
        nobody waits for may wait ``linger_seconds`` for company (see ``LINGER_SECONDS``)."""
        self._loop_items.append(item)
        loop = asyncio.get_running_loop()
        if self._hand_over_loop is not loop:  # scheduled on a loop that has gone (tests)
            self._hand_over_at, self._hand_over_soon, self._hand_over_loop = None, False, loop
        if self._hand_over_soon:
            return
        waits = item.waiter is not None or self.linger_seconds <= 0
        scheduled = self._hand_over_at
        if scheduled is not None and not waits:
            return  # the lingering hand-over takes it
        if scheduled is not None:
            scheduled.cancel()
        if waits:
            self._hand_over_at, self._hand_over_soon = loop.call_soon(self._hand_over), True
        else:
            self._hand_over_at = loop.call_later(self.linger_seconds, self._hand_over)

    def _hand_over(self) -> None:
        scheduled, self._hand_over_at, self._hand_over_soon = self._hand_over_at, None, False
        if scheduled is not None:
            scheduled.cancel()  # ``flush`` or ``close`` handing over before it ran
        items, self._loop_items = self._loop_items, []
        if items:  # empty when ``flush`` handed them over first
            self._queue.put(items)
            self._ensure_running()
            self._watch([i.waiter for i in items if isinstance(i.waiter, asyncio.Future)])

    def _submit(self, item: _Item) -> concurrent.futures.Future[None]:
        """From a thread: queue the item; its concurrent future tells when it is written."""
        assert isinstance(item.waiter, concurrent.futures.Future)
        self._queue.put(item)
        self._ensure_running()
        return item.waiter

    # --- the bounded wait (on the event loop) ---------------------------------------------------

    def _watch(self, waiters: list[asyncio.Future[None]]) -> None:
        """Give this hand-over's waiting requests a deadline (one timer for all of them)."""
        expiring = self._expiring
        # Answered groups leave from the front as new ones come: memory follows what waits.
        while expiring and all(f.done() for f in expiring[0][1]):
            expiring.popleft()
        if not waiters:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # handed over from outside the loop (``close`` after it ended)
            return
        if self._expiry_loop is not loop:  # a loop that has gone (one log, several test loops)
            self._expiry, self._expiry_loop = None, loop
            expiring.clear()
        expiring.append((loop.time() + self.wait_seconds, waiters))
        if self._expiry is None or self._expiry.cancelled():
            self._expiry = loop.call_later(self.wait_seconds, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        expiring = self._expiring
        loop = asyncio.get_running_loop()
        now = loop.time()
        while expiring and expiring[0][0] <= now:
            _, waiters = expiring.popleft()
            late: list[tuple[asyncio.Future[None], BaseException | None]] = [
                (f, Unavailable(UNAVAILABLE)) for f in waiters if not f.done()
            ]
            if late:
                log.error(
                    "%d request(s) had no answer from the access log writer in %.1f s: 503",
                    len(late),
                    self.wait_seconds,
                )
                _settle(late)
        if expiring:
            self._expiry = loop.call_later(max(0.0, expiring[0][0] - now), self._expire)

    # --- the writer ---------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            with self._lock:
                thread = self._thread
                if thread is None or not thread.is_alive():
                    if thread is not None:
                        log.error("the access log writer had stopped; starting it again")
                    self._thread = threading.Thread(
                        target=self._run, name="tapevault-audit", daemon=True
                    )
                    self._thread.start()
                    self.integrator.start()

    def start(self) -> None:
        """Start the integrator now (at a server's start: a predecessor may have left records
        durable but not integrated), not only with the first record."""
        self.integrator.start()

    def close(self) -> None:
        """Seal open playbacks, write what is queued, stop the writer; then integrate what
        waits, checkpoint and give up the integrator's role."""
        if self._loop_items:
            self._hand_over()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(30)
            self._thread = None
        else:
            self._attempt(None, final=True)
        self.integrator.stop()

    def _drain(self, first: _Item | list[_Item] | None = None) -> list[_Item]:
        items: list[_Item] = []
        if first is not None:
            items.extend(first if isinstance(first, list) else [first])
        while len(items) < 5000:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # keep the stop signal for the loop
                break
            items.extend(item if isinstance(item, list) else [item])
        return items

    def _run(self) -> None:
        failures = 0
        while True:
            try:
                # After a failure (and its back-off) try again at once, not a tick later.
                first = self._queue.get(timeout=0 if failures else self.tick_seconds)
            except queue.Empty:
                first = None
                stop = False
            else:
                stop = first is None
            if self._attempt(first, final=stop):
                failures = 0
            else:
                failures += 1
                if not stop:
                    self._back_off(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(failures - 1, 10)))
            if stop:
                return

    def _attempt(self, first: _Item | list[_Item] | None, *, final: bool) -> bool:
        """One writer cycle; whatever goes wrong in it (the store, the lock file, a bug) fails
        its waiters with ``Unavailable`` and keeps its unwaited records, never the thread."""
        items: list[_Item] | None = None
        batch: _Batch | None = None
        written = False
        self._busy_since = time.monotonic()
        try:
            # Take the store's writer lock (other processes may be appending) *before* draining
            # the queue: whatever arrives while we wait for it joins this batch, so contention
            # makes batches bigger instead of commits more frequent.
            with self.store.exclusive():
                items = self._drain(first)
                batch = self._batch(items)
                self._fold(batch, final)
                written = self._write(batch)
                self._busy_since = None
                self._recovered()  # before the waiters hear: whoever was answered sees healthy
                self._resolve(batch.waiters, None)
        except Exception as exc:
            if written:  # the records are in: only their waiters may not have heard
                log.exception("the access log writer failed after a commit")
                if batch is not None:
                    self._resolve(batch.waiters, None)
                return True
            if batch is None:
                batch = self._batch(items if items is not None else self._drain(first))
            self._failed(batch, exc)
            self._count(batch, failed=True)
            return False
        finally:
            self._busy_since = None
        self._count(batch, failed=False)
        self._recovered()
        if self._dropped:
            log.error(
                "%d access record(s) nobody waited for were lost while the log was failing "
                "(over the %d kept for retry)",
                self._dropped,
                MAX_RETAINED,
            )
            self._dropped = 0
        return True

    def _recovered(self) -> None:
        if not self._healthy:
            log.warning("the access log is writable again")
            self._healthy = True

    def _count(self, batch: _Batch | None, *, failed: bool) -> None:
        """Tell ``counts`` how the cycle went; a failure to count is logged, never the
        writer's."""
        ages = [batch.oldest_ms] if batch is not None and batch.oldest_ms is not None else []
        if failed and self._retry:
            ages.append(self._retry[0].at_ms)
        oldest = min(ages) if ages else None
        lag = 0.0 if oldest is None else max(0.0, (now_ms(self.clock) - oldest) / 1000)
        try:
            self.counts.cycle(
                queued=len(self._retry) + self._queue.qsize(), lag_seconds=lag, failed=failed
            )
        except Exception:
            log.exception("counting the access log writer's cycle failed")

    def _batch(self, items: list[_Item]) -> _Batch:
        batch = _Batch(unwaited=list(self._retry), closed=self._retry_closed)
        self._retry.clear()
        self._retry_closed = []
        ages = [e.at_ms for e in batch.unwaited[:1]]  # kept for retry: the oldest is first
        ages.extend(i.entry.at_ms for i in items if i.entry is not None)
        batch.oldest_ms = min(ages) if ages else None
        for item in items:
            if item.opened is not None:
                batch.opened.append(item.opened)
            elif item.entry is not None and item.waiter is not None:
                batch.entries.append(item.entry)
            elif item.entry is not None:
                batch.unwaited.append(item.entry)
            if item.waiter is not None:
                batch.waiters.append(item.waiter)
        return batch

    def _fold(self, batch: _Batch, final: bool) -> None:
        """Add what folding produced: playbacks refreshed and sealed, refusals counted."""
        now = now_ms(self.clock)
        # Fold once a tick by the log's clock (and at shutdown), not every cycle: under load
        # the writer cycles once per commit, and each fold rescans every open playback and
        # rewrites each pending record a response changed, so that cost would be per request.
        if not final and 0 <= now - self._folded_ms < self.tick_seconds * 1000:
            return
        self._folded_ms = now
        if self.folder is not None:
            updated, sealed = self.folder.due(now, final=final)
            batch.updated.extend(updated)
            for playback_id, entry in sealed:
                batch.closed.append(playback_id)
                batch.unwaited.append(entry)
        batch.unwaited.extend(to_entry(e) for e in self.refusals.due(now, final=final))

    def _write(self, batch: _Batch) -> bool:
        """Commit the batch (raises if it cannot); whether anything was written. A failing log
        with nothing to write probes the store, so that it turns healthy only when it is."""
        entries = batch.entries + batch.unwaited
        if not (entries or batch.opened or batch.updated or batch.closed):
            if not self._healthy:
                self.store.probe()
            return False
        self.store.write(entries, opened=batch.opened, updated=batch.updated, closed=batch.closed)
        return True

    def _failed(self, batch: _Batch, exc: Exception) -> None:
        if self._healthy:
            log.error("the access log cannot be written; answering 503", exc_info=exc)
        else:
            log.debug("the access log still cannot be written: %r", exc)
        self._healthy = False
        self._resolve(batch.waiters, Unavailable(UNAVAILABLE))
        # Keep what nobody waited for (sealed playbacks among it) for the next try.
        self._keep(batch.unwaited)
        self._retry_closed = batch.closed + self._retry_closed

    def _keep(self, entries: list[AuditEntry]) -> None:
        """Keep unwaited records for the next try (after those kept already)."""
        self._dropped += max(0, len(self._retry) + len(entries) - MAX_RETAINED)
        self._retry.extend(entries)

    def _back_off(self, seconds: float) -> None:
        """Wait before trying again, refusing at once whoever asks meanwhile: while the log is
        failing a request gets its 503 now, not after the next try."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                return
            if item is None:
                self._queue.put(None)  # stopping: the loop makes its final try
                return
            items = item if isinstance(item, list) else [item]
            self._keep([i.entry for i in items if i.entry is not None and i.waiter is None])
            self._resolve(
                [i.waiter for i in items if i.waiter is not None], Unavailable(UNAVAILABLE)
            )

    def _resolve(
        self,
        waiters: list[concurrent.futures.Future[None] | asyncio.Future[None]],
        error: BaseException | None,
    ) -> None:
        on_loop: list[tuple[asyncio.Future[None], BaseException | None]] = []
        for waiter in waiters:
            if isinstance(waiter, asyncio.Future):
                on_loop.append((waiter, error))
            elif waiter.done():
                continue  # answered already (a cycle that failed after resolving)
            elif error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
        if on_loop:
            loop = on_loop[0][0].get_loop()
            try:
                loop.call_soon_threadsafe(_settle, on_loop)
            except RuntimeError:
                log.debug("the event loop closed before %d request(s) heard back", len(on_loop))

    @property
    def checkpoint_problem(self) -> str | None:
        """Why checkpoints are not being signed (the database contradicts the journal), or why
        records are not being integrated (the integrator failing for a while), or None."""
        return self.integrator.checkpoint_problem or self.integrator.problem

    def check_witness(self) -> str | None:
        return self.integrator.check_witness()

    def checkpoint(self) -> Checkpoint | None:
        """Integrate what is durable now and sign the head (tests, CLI; the integrator does it
        every ``checkpoint_seconds`` by itself)."""
        self.integrator.settle(self.wait_seconds)
        return self.integrator.checkpoint()

    def recover_pending(self, is_dead: Callable[[str], bool], stale_ms: int) -> int:
        """Seal the playbacks that processes which died left pending (they count as served up
        to their last refresh), and those of any process not refreshed for ``stale_ms``."""
        now = now_ms(self.clock)
        orphans = [
            p for p in self.store.pending() if is_dead(p.owner) or now - p.updated_ms > stale_ms
        ]
        if orphans:
            # What the record says was served is a lower bound (it lags by up to one writer
            # tick, and responses still streaming were cut): say so.
            sealed = [
                replace(
                    p.entry,
                    detail={**(p.entry.detail or {}), "recovered": True, "interrupted": True},
                )
                for p in orphans
            ]
            self.store.write(sealed, closed=[p.playback_id for p in orphans])
        return len(orphans)

    def flush(self) -> None:
        """Wait until everything queued so far is written and integrated (tests, CLI)."""
        if self._loop_items:  # what the loop queued and has not handed over yet (as ``close``)
            self._hand_over()
        waiter: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._submit(_Item(waiter=waiter))
        try:
            waiter.result(self.wait_seconds)
        except TimeoutError:
            raise Unavailable(UNAVAILABLE) from None
        self.integrator.settle(self.wait_seconds)
