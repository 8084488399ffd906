"""Whether this process can serve its traffic now: the checks behind ``GET /readyz``.

Liveness (``/healthz``) says the process works; readiness says what it depends on works too: the
database answers, the schema is at this code's migration head (a process started against a
database another version migrated, or not yet migrated, must not take traffic), and the object
store answers a cheap ``stat``. A load balancer or nginx's upstream check polls it, so:

- one check runs at a time per process, in a thread (the database and store calls block), and
  its answer is reused for ``TTL`` seconds: a flood of probes costs one check a second;
- a check that does not come back within ``TIMEOUT`` is answered as failing, without starting
  another while it still hangs (no pile-up of threads on a database that stopped answering);
- the reasons say which dependency failed, never a host, path or driver message (those go to the
  server log): the endpoint is unauthenticated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tapevault.core.ports import Stat

log = logging.getLogger("tapevault.readiness")

TTL = 1.0
TIMEOUT = 2.0
OK = "ok"
# A key no recording can have (ids are ULIDs and UUIDs): its stat is a cheap round trip that
# proves the store answers, whatever it holds.
PROBE_KEY = "readyz-probe"

DATABASE_DOWN = "The database does not answer."
SCHEMA_BEHIND = "The database schema is not at this version's migrations (run tapevault migrate)."
STORE_DOWN = "The object store does not answer."
TIMED_OUT = "The check did not finish within {seconds:g} s."


@dataclass(frozen=True)
class Answer:
    """Every check by name: ``OK`` or the reason it fails."""

    checks: Mapping[str, str]

    @property
    def ready(self) -> bool:
        return all(value == OK for value in self.checks.values())


class Readiness:
    """Runs ``probe`` (blocking: every check by name) at most once per ``ttl`` seconds."""

    def __init__(
        self,
        probe: Callable[[], dict[str, str]],
        names: tuple[str, ...],
        *,
        ttl: float = TTL,
        timeout: float = TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe = probe
        self.names = names
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self._answer: Answer | None = None
        self._answered_at = 0.0
        self._running: asyncio.Future[dict[str, str]] | None = None

    async def answer(self) -> Answer:
        now = self.clock()
        if self._answer is not None and now - self._answered_at < self.ttl:
            return self._answer
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(asyncio.to_thread(self.probe))
        try:
            checks = await asyncio.wait_for(asyncio.shield(self._running), self.timeout)
        except TimeoutError:
            reason = TIMED_OUT.format(seconds=self.timeout)
            checks = dict.fromkeys(self.names, reason)
        except Exception:  # a bug in a check must read as "not ready", not as a 500
            log.exception("readiness check failed")
            checks = dict.fromkeys(self.names, "The check failed (the server log says why).")
        self._answer = Answer(checks)
        self._answered_at = self.clock()
        return self._answer


CHECKS = ("database", "migrations", "store")


def stat_probe(store: Stat) -> Callable[[], None]:
    """The store answers: a ``stat`` of a key that need not exist (None is an answer)."""

    def probe() -> None:
        store.stat(PROBE_KEY)

    return probe


def probe_dependencies(
    revision: Callable[[], str | None], head: str, store_answers: Callable[[], None]
) -> Callable[[], dict[str, str]]:
    """The blocking probe: ``revision()`` reads the database's schema revision (so it also
    proves the database answers), which must be ``head``; ``store_answers()`` raises unless
    the store answers."""

    def probe() -> dict[str, str]:
        checks = dict.fromkeys(CHECKS, OK)
        try:
            current = revision()
        except Exception as exc:
            log.warning("readiness: database: %s: %s", type(exc).__name__, str(exc)[:300])
            checks["database"] = DATABASE_DOWN
            checks["migrations"] = DATABASE_DOWN
        else:
            if current != head:
                log.warning("readiness: schema at %s, this code needs %s", current, head)
                checks["migrations"] = SCHEMA_BEHIND
        try:
            store_answers()
        except Exception as exc:
            log.warning("readiness: store: %s: %s", type(exc).__name__, str(exc)[:300])
            checks["store"] = STORE_DOWN
        return checks

    return probe
