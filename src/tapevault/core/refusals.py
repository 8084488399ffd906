"""Refusals of callers nobody identified, counted per source instead of written one by one.

Anyone can send thousands of requests a second with a bad token or a forged URL, and one record
each let an anonymous client grow the access log by ~300 MB in 20 s. So for each source and
reason — (client address, action, credential kind, status, error) — the first refusal of a
window is written as the record it always was, and the others of that window become **one**
record at its end whose ``detail.aggregated`` says how many it stands for (with the first and
last time). Counts are exact: the records of a source add up to the requests it made.

Memory is bounded: at most ``max_sources`` sources are tracked at once; refusals of any further
source in that window are counted under one overflow entry per (action, status), written as a
record with no address. So however many addresses an attacker has, the log grows by at most
about two records per tracked source and window.

What is aggregated: a refusal (401, 403, 404, 405) of a request whose caller was not identified
(no tenant), and every ``auth.failure``. Anything a known caller did is written one by one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tapevault.core.access import AccessEvent, Action, Actor

WINDOW_MS = 60_000
MAX_SOURCES = 1024
REFUSED = frozenset({401, 403, 404, 405})

Key = tuple[str | None, Action, str | None, int, str | None]


def aggregated(event: AccessEvent) -> bool:
    """Whether ``event`` is an anonymous refusal, counted rather than written one by one."""
    return event.actor.partner_id is None and (
        event.action is Action.AUTH_FAILURE or event.status in REFUSED
    )


@dataclass(slots=True)
class _Window:
    key: Key
    opened_ms: int  # the window's first refusal (written on its own for a tracked source)
    count: int = 0  # refusals since, not yet written
    first_ms: int = 0
    last_ms: int = 0
    overflow: bool = False  # counts sources beyond the tracked ones (no first record)

    def add(self, at_ms: int) -> None:
        if not self.count:
            self.first_ms = at_ms
        self.count += 1
        self.last_ms = max(self.last_ms, at_ms)


class Refusals:
    """The aggregation table; ``admit`` runs for every recorded event (any thread), ``due``
    on the access log's writer tick."""

    def __init__(self, *, window_ms: int = WINDOW_MS, max_sources: int = MAX_SOURCES) -> None:
        self.window_ms = window_ms
        self.max_sources = max_sources
        self._sources: dict[Key, _Window] = {}
        self._overflow: dict[Key, _Window] = {}
        self._lock = threading.Lock()

    def admit(self, event: AccessEvent) -> bool:
        """True: write ``event`` as its own record. False: it was counted (written later)."""
        if not aggregated(event):
            return True
        actor = event.actor
        # Bounded key texts: the key lives in memory for a window.
        key: Key = (
            actor.client_ip and actor.client_ip[:64],
            event.action,
            actor.kind and actor.kind[:20],
            event.status,
            event.error and event.error[:200],
        )
        at = event.at_ms
        with self._lock:
            window = self._sources.get(key)
            if window is not None:
                window.add(at)
                return False
            if len(self._sources) < self.max_sources:
                self._sources[key] = _Window(key, opened_ms=at)
                return True
            spill: Key = (None, event.action, None, event.status, None)
            window = self._overflow.get(spill)
            if window is None:
                window = self._overflow[spill] = _Window(spill, opened_ms=at, overflow=True)
            window.add(at)
            return False

    def due(self, now_ms: int, *, final: bool = False) -> list[AccessEvent]:
        """The aggregate records of the windows that have ended (all of them when ``final``);
        their sources start afresh with their next refusal."""
        ended: list[_Window] = []
        with self._lock:
            for table in (self._sources, self._overflow):
                for key, window in list(table.items()):
                    if final or now_ms - window.opened_ms >= self.window_ms:
                        del table[key]
                        if window.count:
                            ended.append(window)
        return [_record(w) for w in ended]

    def __len__(self) -> int:
        return len(self._sources) + len(self._overflow)


def _record(window: _Window) -> AccessEvent:
    client_ip, action, kind, status, error = window.key
    detail: dict[str, object] = {
        "aggregated": window.count,
        "first_at_ms": window.first_ms,
        "last_at_ms": window.last_ms,
    }
    if window.overflow:
        detail["sources"] = "overflow"  # beyond the tracked sources: any address
    return AccessEvent(
        action=action,
        actor=Actor(kind=kind, client_ip=client_ip),
        status=status,
        at_ms=window.last_ms,
        error=error,
        detail=detail,
    )
