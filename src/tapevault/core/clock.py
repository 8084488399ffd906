"""Time as a parameter, so expiry and retention are testable at their exact boundaries."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current Unix time in seconds."""

    def now(self) -> float: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()


class OffsetClock:
    """The wall clock shifted by ``offset`` seconds: a testing knob, to run one server of several
    with its clock ahead or behind (``TAPEVAULT_CLOCK_OFFSET_SECONDS``), as machines drift."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


class FixedClock:
    """A clock that moves only when told to; for tests."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, now: float) -> None:
        self._now = now


def now_ms(clock: Clock) -> int:
    """The clock's time in integer milliseconds."""
    return int(clock.now() * 1000)
