"""Playbacks: a player's burst of Range requests, folded into one access record.

An ``<audio>`` element asks for ``bytes=0-``, then for wherever the listener seeks, often dozens
of times a minute. One record per request would drown the log; the rule here is one record per
playback: the requests of one signed URL (or one API credential on one file) from one client
(address and user agent), until the client has been idle for ``idle_seconds``.

The first request of a playback waits until a pending record is durable (``Pending``), so no
audio leaves before the log knows about it; later requests of the same playback only add their
ranges and bytes in memory (refreshed into the pending record every writer tick), unless the log
is unhealthy, in which case they fail with ``Unavailable`` too. When the playback goes idle its
one ``media.playback`` record is chained: every range served (merged), the byte total, the
number of requests and their statuses.

A response counts as it streams, not only when it ends (``sending``): each chunk handed to the
server adds its bytes and range to the playback, so the pending record refreshed every tick
keeps up with a long download too, and a response cut off by an error still counts what it sent.
A process that dies leaves its pending records at their last refresh: the next start seals them
``recovered`` and ``interrupted``, a lower bound of what was served that lags the truth by at
most one writer tick (``in_flight`` says how many responses were still streaming then).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from tapevault.core.access import AccessEvent, AccessLog, Action
from tapevault.core.auditlog import AuditLog, Pending, Sealed, to_entry
from tapevault.core.clock import Clock, now_ms
from tapevault.errors import Unavailable

IDLE_SECONDS = 30.0
MAX_SECONDS = 3600.0  # a very long playback is cut into hour-long records
MAX_INTERVALS = 64  # distinct byte ranges kept per record; closer ones merge beyond that
UNMERGED = 4 * MAX_INTERVALS  # ranges gathered before they are merged (bounded memory)
# A leased playback (nginx serves its ranges without asking, ``lease``) that was sealed is
# remembered this long, and at most this many, so that a report arriving after the seal (a
# response nginx was still sending) goes into a continuation record instead of being lost.
CONTINUE_MS = 3600 * 1000
MAX_CONTINUED = 65_536


def merge_ranges(
    ranges: Sequence[tuple[int, int]], limit: int = MAX_INTERVALS
) -> list[tuple[int, int]]:
    """Inclusive byte ranges as a sorted union; past ``limit`` the nearest neighbours merge
    (the record then over-states what was read, never under-states it)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    while len(merged) > limit:
        gaps = [merged[i + 1][0] - merged[i][1] for i in range(len(merged) - 1)]
        i = gaps.index(min(gaps))
        merged[i : i + 2] = [(merged[i][0], merged[i + 1][1])]
    return merged


class Sending:
    """One response of a playback while it streams: what it has handed to the server so far."""

    __slots__ = ("_lock", "_playback", "bytes_sent", "ranges")

    def __init__(self, playback: _Playback, lock: threading.Lock) -> None:
        self._playback = playback
        self._lock = lock
        self.bytes_sent = 0
        self.ranges: list[tuple[int, int]] = []

    def sent(self, body: int, start: int, length: int) -> None:
        """``body`` bytes went out, ``length`` of them audio from offset ``start`` (0 for
        framing); called for each chunk, on the event loop."""
        with self._lock:
            self.bytes_sent += body
            if length:
                end = start + length - 1
                if self.ranges and self.ranges[-1][1] + 1 == start:
                    self.ranges[-1] = (self.ranges[-1][0], end)
                else:
                    self.ranges.append((start, end))
                    if len(self.ranges) > MAX_INTERVALS:
                        self.ranges = merge_ranges(self.ranges)
            self._playback.dirty = True

    def retract(self) -> None:
        """Nothing of what was counted went out after all (a handed-off response whose answer
        never reached the proxy: ``core/handoff.py``)."""
        with self._lock:
            self.bytes_sent = 0
            self.ranges = []
            self._playback.dirty = True


@dataclass
class _Playback:
    playback_id: str
    key: Hashable  # what a later request must share to join it (see ``admit``)
    event: AccessEvent  # the first request, who and what
    opened_ms: int
    last_ms: int
    # Done once the pending record is durable (True) or could not be written (False); a request
    # that joins before then waits for it, so no byte leaves before the log knows the playback.
    # None for a continuation record, which nobody joins.
    opened: asyncio.Future[bool] | None
    requests: int = 0
    status: int = 0  # of the first response
    statuses: Counter[int] = field(default_factory=Counter)
    ranges: list[tuple[int, int]] = field(default_factory=list)
    bytes_sent: int = 0
    dirty: bool = False
    active: int = 0  # responses admitted and not yet reported: a long one is not "idle"
    sending: list[Sending] = field(default_factory=list)  # responses streaming now
    # Responses a front proxy sent that it never reported: counted as authorised (an upper
    # bound; ``core/handoff.py``).
    unconfirmed: int = 0
    # Until then (ms) a front proxy may serve ranges of this playback without asking (a cached
    # authorisation, ``Playbacks.lease``); they are added when it reports them.
    leased_until_ms: int = 0

    def event_now(self) -> AccessEvent:
        """The playback's one record as it stands, responses still streaming included."""
        detail: dict[str, object] = {
            "playback_id": self.playback_id,
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "last_at_ms": self.last_ms,
        }
        if self.unconfirmed:
            detail["unconfirmed"] = self.unconfirmed
        if self.leased_until_ms:
            # A record sealed after a crash may lack what nginx sent under the lease until then.
            detail["proxy_until_ms"] = self.leased_until_ms
        ranges, bytes_sent = self.ranges, self.bytes_sent
        if self.sending:
            detail["in_flight"] = len(self.sending)
            ranges = [*ranges, *(r for s in self.sending for r in s.ranges)]
            bytes_sent += sum(s.bytes_sent for s in self.sending)
        ranges = merge_ranges(ranges)
        return replace(
            self.event,
            action=Action.MEDIA_PLAYBACK,
            at_ms=self.opened_ms,
            status=self.status or self.event.status,
            ranges=list(ranges),
            bytes_sent=bytes_sent,
            detail={**(self.event.detail or {}), **detail},
        )


class PlaybackLog(Protocol):
    """What the media paths need: admit a response before its first byte, then report it."""

    async def admit(self, key: Hashable, event: Callable[[], AccessEvent]) -> str:
        """``event`` builds the first request's record; called only when a playback opens."""
        ...

    def sending(self, playback_id: str) -> Sending | None:
        """A response of the playback starts streaming: what it sends counts as it goes
        (None when nothing is durable before the end anyway)."""
        ...

    def served(
        self,
        playback_id: str,
        status: int,
        ranges: Sequence[tuple[int, int]],
        bytes_sent: int,
        sending: Sending | None = None,
        *,
        unconfirmed: bool = False,
        admitted: bool = True,
    ) -> None:
        """What one response sent; ``unconfirmed``: a front proxy's response never reported,
        counted as authorised; ``admitted=False``: a response the proxy sent under a lease,
        never admitted here."""
        ...

    def lease(self, playback_id: str, until_ms: int) -> bool:
        """A front proxy may serve ranges of the (admitted, durable) playback without asking
        until ``until_ms``; it stays open until then and reports them. False when this log
        cannot fold such reports (the caller then does not lease)."""
        ...

    def abandon(self, playback_id: str, sending: Sending | None = None) -> None: ...


class PerRequest:
    """No folding and no durability: each response is one record once it was sent (with an
    access log that is not the durable one: the JSON-lines logger, or a list in tests)."""

    def __init__(self, access_log: AccessLog) -> None:
        self.access_log = access_log
        self._events: dict[str, AccessEvent] = {}

    async def admit(self, key: Hashable, event: Callable[[], AccessEvent]) -> str:
        playback_id = secrets.token_hex(12)
        self._events[playback_id] = event()
        return playback_id

    def sending(self, playback_id: str) -> Sending | None:
        return None

    def served(
        self,
        playback_id: str,
        status: int,
        ranges: Sequence[tuple[int, int]],
        bytes_sent: int,
        sending: Sending | None = None,
        *,
        unconfirmed: bool = False,
        admitted: bool = True,
    ) -> None:
        event = self._events.pop(playback_id, None)
        if event is not None:
            detail = {**(event.detail or {}), "unconfirmed": 1} if unconfirmed else event.detail
            self.access_log.record(
                replace(
                    event,
                    status=status,
                    ranges=list(ranges),
                    bytes_sent=bytes_sent,
                    detail=detail,
                )
            )

    def lease(self, playback_id: str, until_ms: int) -> bool:
        return False  # one record per response: nothing to fold proxy reports into

    def abandon(self, playback_id: str, sending: Sending | None = None) -> None:
        self._events.pop(playback_id, None)


class Playbacks:
    def __init__(
        self,
        audit: AuditLog,
        clock: Clock,
        owner: str,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_seconds: float = MAX_SECONDS,
    ) -> None:
        self.audit = audit
        self.clock = clock
        self.owner = owner
        self.idle_ms = int(idle_seconds * 1000)
        self.max_ms = int(max_seconds * 1000)
        # The playback a new request of each key may join, and every playback not yet sealed:
        # one that went idle stays in ``_by_id`` after a new one replaced it under its key, so
        # the writer still seals it (and a late report still reaches it).
        self._open: dict[Hashable, _Playback] = {}
        self._by_id: dict[str, _Playback] = {}
        # Sealed leased playbacks: (their first record's event, when sealed, the continuation's
        # id once a late report opened one).
        self._continued: OrderedDict[str, tuple[AccessEvent, int, str | None]] = OrderedDict()
        self._lock = threading.Lock()
        audit.folder = self

    async def admit(self, key: Hashable, event: Callable[[], AccessEvent]) -> str:
        """Before the first byte of a response: the playback it belongs to (opened durably when
        it is a new one, from ``event()``: a joining request builds no record). Raises
        ``Unavailable`` when the log cannot be written.

        The playback is registered under its key before its pending record is written, so a
        request of the same player that arrives meanwhile (players often open two at once)
        joins it and waits for that write instead of opening a second record."""
        now = now_ms(self.clock)
        with self._lock:
            playback = self._open.get(key)
            if playback is not None and self._live(playback, now):
                playback.last_ms = now
                playback.active += 1
                joined = True
            else:
                joined = False
                opened = asyncio.get_running_loop().create_future()
                playback = _Playback(secrets.token_hex(12), key, event(), now, now, opened)
                playback.active = 1
                self._open[key] = playback
                self._by_id[playback.playback_id] = playback
        if joined:
            assert playback.opened is not None  # only continuations have none, never joined
            try:
                ready = await asyncio.shield(playback.opened)
            except BaseException:  # cancelled while waiting: this response never starts
                self.abandon(playback.playback_id)
                raise
            if not ready:
                return await self.admit(key, event)  # its opener failed: start over
            if not self.audit.healthy:
                self.abandon(playback.playback_id)
                raise Unavailable("The access log cannot be written; nothing was served.")
            return playback.playback_id
        pending = Pending(
            playback.playback_id, self.owner, to_entry(playback.event_now()), now, now
        )
        try:
            await self.audit.open_pending(pending)
        except BaseException:
            with self._lock:
                self._by_id.pop(playback.playback_id, None)
                if self._open.get(key) is playback:
                    del self._open[key]
            opened.set_result(False)
            raise
        opened.set_result(True)
        return playback.playback_id

    def sending(self, playback_id: str) -> Sending | None:
        with self._lock:
            playback = self._by_id.get(playback_id)
            if playback is None:
                return None
            response = Sending(playback, self._lock)
            playback.sending.append(response)
            return response

    def served(
        self,
        playback_id: str,
        status: int,
        ranges: Sequence[tuple[int, int]],
        bytes_sent: int,
        sending: Sending | None = None,
        *,
        unconfirmed: bool = False,
        admitted: bool = True,
    ) -> None:
        """What one response of the playback sent (superseding what ``sending`` counted);
        ``admitted=False``: one a front proxy sent under the playback's lease."""
        with self._lock:
            playback = self._by_id.get(playback_id)
            if playback is None and not admitted:
                playback = self._continuation(playback_id)
            if playback is None:
                return  # sealed meanwhile (idle cut-off raced the response): nothing to add
            if sending is not None and sending in playback.sending:
                playback.sending.remove(sending)
            playback.requests += 1
            if admitted:
                playback.active = max(0, playback.active - 1)
            playback.status = playback.status or status
            playback.statuses[status] += 1
            # Merged when the record is written (each tick), or when many have gathered: a
            # report per 64 KiB seek costs an append, not a sort of the playback's ranges.
            playback.ranges += ranges
            if len(playback.ranges) > UNMERGED:
                playback.ranges = merge_ranges(playback.ranges)
            playback.bytes_sent += bytes_sent
            playback.unconfirmed += unconfirmed
            playback.last_ms = max(playback.last_ms, now_ms(self.clock))
            playback.dirty = True

    def lease(self, playback_id: str, until_ms: int) -> bool:
        with self._lock:
            playback = self._by_id.get(playback_id)
            if playback is None:
                return False
            if until_ms > playback.leased_until_ms:
                playback.leased_until_ms = until_ms
                playback.dirty = True
            return True

    def _continuation(self, playback_id: str) -> _Playback | None:
        """The record that takes a leased playback's late reports (its lock held): the proxy
        reported a response after the playback was sealed (it was still sending it). It says
        which playback it continues; the writer seals it like any other once idle."""
        known = self._continued.get(playback_id)
        if known is None:
            return None
        event, sealed_ms, continuation_id = known
        if continuation_id is not None and continuation_id in self._by_id:
            return self._by_id[continuation_id]
        now = now_ms(self.clock)
        continued = replace(event, detail={**(event.detail or {}), "continues": playback_id})
        playback = _Playback(
            secrets.token_hex(12), ("continues", playback_id), continued, now, now, None
        )
        self._by_id[playback.playback_id] = playback
        self._continued[playback_id] = (event, sealed_ms, playback.playback_id)
        return playback

    def _remember(self, playback: _Playback, now: int) -> None:
        """Keep a sealed leased playback's event for late reports (bounded; lock held)."""
        if not playback.leased_until_ms:
            return
        self._continued[playback.playback_id] = (playback.event, now, None)
        while self._continued and (
            len(self._continued) > MAX_CONTINUED
            or now - next(iter(self._continued.values()))[1] > CONTINUE_MS
        ):
            self._continued.popitem(last=False)

    def abandon(self, playback_id: str, sending: Sending | None = None) -> None:
        """An admitted response that ended without a report (refused, or failed mid-way):
        whatever it had sent still counts."""
        with self._lock:
            playback = self._by_id.get(playback_id)
            if playback is not None:
                playback.active = max(0, playback.active - 1)
                if sending is not None and sending in playback.sending:
                    playback.sending.remove(sending)
                    if sending.bytes_sent:
                        playback.bytes_sent += sending.bytes_sent
                        playback.ranges = merge_ranges([*playback.ranges, *sending.ranges])
                        playback.dirty = True

    def due(self, now_ms: int, *, final: bool) -> tuple[list[Pending], list[Sealed]]:
        """Called by the log's writer each tick: refresh changed pending records, seal idle
        (or, at shutdown, all) playbacks."""
        updated: list[Pending] = []
        sealed: list[Sealed] = []
        with self._lock:
            for playback in list(self._by_id.values()):
                if final or not self._live(playback, now_ms):
                    del self._by_id[playback.playback_id]
                    if self._open.get(playback.key) is playback:
                        del self._open[playback.key]
                    sealed.append((playback.playback_id, to_entry(playback.event_now())))
                    self._remember(playback, now_ms)
                elif playback.dirty:
                    playback.dirty = False
                    entry = to_entry(playback.event_now())
                    updated.append(
                        Pending(playback.playback_id, self.owner, entry, playback.opened_ms, now_ms)
                    )
        return updated, sealed

    def _live(self, playback: _Playback, now: int) -> bool:
        if playback.active:
            return True  # a response is still streaming: the player is not idle
        if now < playback.leased_until_ms:
            return True  # the proxy may still start responses of it without asking
        last = max(playback.last_ms, playback.leased_until_ms)
        return now - last < self.idle_ms and now - playback.opened_ms < self.max_ms
