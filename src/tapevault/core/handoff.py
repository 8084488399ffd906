"""Responses whose bytes a front proxy sends: authorised and recorded here, reported by the proxy.

With ``TAPEVAULT_ACCEL_REDIRECT`` tapevault answers a media GET it has fully validated with an
``X-Accel-Redirect`` and nginx sends the bytes from the same file (``http/xaccel.py``). tapevault
then no longer sees the bytes go out, so the playback's record is kept exact in two steps:

1. **Authorised** (before nginx sends a byte): the response joins its playback (whose pending
   record is durable, as for any playback) as a response in flight that counts the whole range it
   was allowed; the pending record, refreshed every writer tick, says so (``in_flight``).
2. **Reported** (when nginx has finished): nginx writes one line per handed-off response to its
   delivery log, with the status it sent, the body bytes it sent and its ``Content-Range``
   (``http/deliverylog.py`` reads it); :meth:`Handoffs.report` replaces the authorised figures by
   what was really sent: a client that went away mid-range counts only what nginx sent it.

A response never reported (nginx killed, its log line lost) counts what it was authorised, an
upper bound, after ``timeout_ms`` and is marked ``unconfirmed`` in the playback's record; a
process killed before the report leaves the authorised range in the pending record, which the
next start seals. Either way the log may over-state such a response, never under-state it.

**Leases** (``TAPEVAULT_ACCEL_AUTHZ_SECONDS``): for seeks nginx may instead ask once and cache
the answer (``auth_request`` with ``proxy_cache``), then serve every range of that playback from
the file for a few seconds without asking. The first request of a playback still waits for its
durable pending record; the playback is then *leased* (:meth:`Handoffs.lease`): it stays open at
least until the lease ends, its record says until when the proxy could serve without asking
(``proxy_until_ms``), and each response the proxy sent under it arrives as a report with the
lease's id and is added to the playback as sent (a report after the playback was sealed goes
into a continuation record). What a lease trades: a revoked key, a deleted recording's record or
an expired retention is noticed by the proxy only when the lease ends (at most the lease's
length; a deleted file is noticed at once, nginx cannot open it), and a process killed while its
leases ran leaves their playbacks' records without what the proxy sent after the last report
was read (the sealed record names the lease's end).

No file, socket or HTTP here: the proxy's report arrives as plain values.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tapevault.core.playback import PlaybackLog, Sending

log = logging.getLogger("tapevault.handoff")

MAX_OPEN = 65_536  # responses in flight per process; past it tapevault sends the bytes itself
TIMEOUT_MS = 3600 * 1000  # unreported this long: counted as authorised (unconfirmed)
# After the proxy answered a handed-off response with an error of its own (it cannot read the
# store: permissions, a wrong alias), tapevault sends the bytes itself this long, then tries
# again: a misconfigured proxy costs one failed response per pause, not every response.
PAUSE_SECONDS = 30.0
_CONTENT_RANGE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19})")
LEASE_MARK = ".L"  # a lease's id: "<process prefix>.L<playback id>"


@dataclass(frozen=True, slots=True)
class Report:
    """What the proxy says it sent for one handed-off response."""

    delivery_id: str
    status: int
    body_bytes: int
    content_range: str | None  # the Content-Range it sent (None without one)


@dataclass(slots=True)
class _Open:
    playback_id: str
    sending: Sending | None
    status: int  # what tapevault expects the proxy to answer: 200 or 206
    start: int
    length: int
    at_ms: int


def sent_ranges(report: Report) -> list[tuple[int, int]]:
    """The bytes of the representation a report says went out: a 206's from its Content-Range
    start, a 200's from 0, as many as the body bytes sent (fewer when the client left)."""
    if report.body_bytes <= 0:
        return []
    if report.status == 200:
        return [(0, report.body_bytes - 1)]
    if report.status == 206 and report.content_range:
        match = _CONTENT_RANGE.fullmatch(report.content_range)
        if match is not None:
            first, last = int(match.group(1)), int(match.group(2))
            return [(first, min(last, first + report.body_bytes - 1))]
    return []  # an error page, or a multipart answer tapevault never hands off


class Handoffs:
    """The handed-off responses of one process, until the proxy reports them.

    Thread-safe: responses are handed off on the event loop, reports arrive on the delivery
    log's reader thread, expiry runs on that thread too."""

    def __init__(
        self,
        playbacks: PlaybackLog,
        *,
        max_open: int = MAX_OPEN,
        timeout_ms: int = TIMEOUT_MS,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        self.playbacks = playbacks
        self.on_sent = on_sent  # the bytes metric: counted when the proxy says they went
        self.max_open = max_open
        self.timeout_ms = timeout_ms
        # Ids name this process (another process reading the same proxy log skips its lines)
        # and count up; unguessable only for tidiness: the client never sees them.
        self.prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()
        self.mismatches = 0  # reports whose status or start differ from what was authorised
        self.paused_until = 0.0  # time.monotonic(): no hand-off before then
        self._warned_at = -1e9

    @property
    def in_flight(self) -> int:
        return len(self._open)

    def hand_off(
        self, playback_id: str, status: int, start: int, length: int, now_ms: int
    ) -> str | None:
        """Register a response the proxy is about to send (``length`` bytes from ``start``,
        answered with ``status``); its delivery id, or None when too many are in flight (the
        caller then sends the bytes itself, exactly counted as ever)."""
        with self._lock:
            if len(self._open) >= self.max_open or time.monotonic() < self.paused_until:
                return None
            delivery_id = f"{self.prefix}.{next(self._counter)}"
            sending = self.playbacks.sending(playback_id)
            self._open[delivery_id] = _Open(playback_id, sending, status, start, length, now_ms)
        if sending is not None:
            # Counted as authorised until the report says what really went out.
            sending.sent(length, start, length)
        return delivery_id

    def lease(self, playback_id: str, until_ms: int) -> str | None:
        """Let the proxy serve ranges of the playback (admitted: its record is durable) without
        asking until ``until_ms``: the id its reports will carry, or None when the playback log
        cannot take them (or hand-offs are paused): the proxy must then ask per response."""
        if time.monotonic() < self.paused_until:
            return None
        if not self.playbacks.lease(playback_id, until_ms):
            return None
        return f"{self.prefix}{LEASE_MARK}{playback_id}"

    def cancel(self, delivery_id: str) -> None:
        """The answer naming ``delivery_id`` never reached the proxy (the connection to it
        failed): nothing was sent, and the response ends with no bytes."""
        with self._lock:
            entry = self._open.pop(delivery_id, None)
        if entry is not None:
            if entry.sending is not None:
                entry.sending.retract()
            self.playbacks.abandon(entry.playback_id, entry.sending)

    def owns(self, delivery_id: str) -> bool:
        return delivery_id.startswith(self.prefix)

    def report(self, report: Report) -> bool:
        """The proxy finished a response: record what it sent. False for an id this process
        does not hold (another process's, or already expired)."""
        with self._lock:
            entry = self._open.pop(report.delivery_id, None)
        if entry is None:
            return self._leased(report)
        ranges = sent_ranges(report)
        if report.status != entry.status or (ranges and ranges[0][0] != entry.start):
            self._mismatch(report, entry)
        self.playbacks.served(
            entry.playback_id, report.status, ranges, report.body_bytes, entry.sending
        )
        if self.on_sent is not None and report.body_bytes:
            self.on_sent(report.body_bytes)
        return True

    def _leased(self, report: Report) -> bool:
        """A response the proxy sent under a lease: added to its playback as sent (a 416 of
        its own, for a range past the end, with no audio)."""
        prefix, mark, playback_id = report.delivery_id.partition(LEASE_MARK)
        if not mark or prefix != self.prefix or not playback_id:
            return False
        if report.status not in (200, 206, 416):
            return False  # not an answer of the seek location (its errors go to tapevault)
        self.playbacks.served(
            playback_id,
            report.status,
            sent_ranges(report),
            report.body_bytes,
            admitted=False,
        )
        if self.on_sent is not None and report.body_bytes:
            self.on_sent(report.body_bytes)
        return True

    def _mismatch(self, report: Report, entry: _Open) -> None:
        """The proxy answered otherwise than authorised: recorded as it sent it; an error of
        its own pauses hand-offs. Told at most every 10 s (a misconfigured proxy fails every
        response)."""
        now = time.monotonic()
        self.mismatches += 1
        if report.status not in (200, 206):
            self.paused_until = now + PAUSE_SECONDS
        if now - self._warned_at >= 10:
            self._warned_at = now
            log.warning(
                "the proxy answered %s %r for a response authorised as %d, bytes %d+%d "
                "(recorded as the proxy sent it; %d such so far)%s",
                report.status,
                report.content_range,
                entry.status,
                entry.start,
                entry.length,
                self.mismatches,
                f"; tapevault sends media itself for {PAUSE_SECONDS:g} s: can nginx read the "
                "store (its alias, its permissions)?"
                if report.status not in (200, 206)
                else "",
            )

    def expire(self, now_ms: int) -> int:
        """Count responses unreported for ``timeout_ms`` as authorised, marked unconfirmed."""
        with self._lock:
            late = [
                (delivery_id, entry)
                for delivery_id, entry in self._open.items()
                if now_ms - entry.at_ms >= self.timeout_ms
            ]
            for delivery_id, _entry in late:
                del self._open[delivery_id]
        for _delivery_id, entry in late:
            end = entry.start + entry.length - 1
            self.playbacks.served(
                entry.playback_id,
                entry.status,
                [(entry.start, end)],
                entry.length,
                entry.sending,
                unconfirmed=True,
            )
        if late:
            log.warning(
                "%d response(s) handed to the proxy were never reported within %d s: recorded "
                "as authorised (unconfirmed); is the proxy's delivery log the one "
                "TAPEVAULT_ACCEL_LOG names?",
                len(late),
                self.timeout_ms // 1000,
            )
        return len(late)
