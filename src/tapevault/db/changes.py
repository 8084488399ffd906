"""The change feed: every process hears within a fraction of a second that another one changed
what may be served (a deletion, a hold, a retention change, a signing key rotated or removed, a
tenant's secret rotated, an API key revoked).

Every such write bumps ``cache_epoch`` in its transaction (``SqlRepository._changed``), and on
PostgreSQL also sends ``NOTIFY tapevault_changes``, which is delivered when it commits. Each
server process runs one ``ChangeFeed`` thread that waits for that notification (PostgreSQL:
``LISTEN`` on a connection of its own) or at most ``POLL_SECONDS``, then reads the epoch; when it
moved, ``on_change`` drops the process's caches and re-reads its signing keys. So a change takes
effect on every node within milliseconds on PostgreSQL and within ``POLL_SECONDS`` on SQLite (or
when a notification is lost, e.g. while the listening connection reconnects), and the request path
itself reads nothing for it: the cost is one idle connection per process and four point reads a
second, whatever the request rate.

A feed that cannot reach the database keeps trying; meanwhile ``Vault``'s own periodic check (at
most once a second, on the request path) still applies, and requests that need the database fail
closed with 503 anyway.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

log = logging.getLogger("tapevault.db")

CHANNEL = "tapevault_changes"
POLL_SECONDS = 0.25
RETRY_SECONDS = 1.0  # a database away: try again this often (one log line per outage)


class ChangeFeed:
    """Calls ``on_change`` (on its own thread) whenever ``read_epoch`` returns a new value."""

    def __init__(
        self,
        engine: Engine,
        read_epoch: Callable[[], int],
        on_change: Callable[[], None],
        *,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._engine = engine
        self._read_epoch = read_epoch
        self._on_change = on_change
        self._poll = poll_seconds
        self._listen = engine.dialect.name == "postgresql"
        self._connection: Any = None  # psycopg's, LISTENing (PostgreSQL only)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.epoch: int | None = None
        self.changes = 0  # how many changes this feed has passed on (tests, logs)

    def start(self) -> None:
        try:
            self.epoch = self._read_epoch()
        except Exception as exc:  # the database away at start: the first check passes one on
            log.warning("the change feed starts without the database: %s", exc)
        self._thread = threading.Thread(target=self._run, name="tapevault-changes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._poll * 4 + 1)
            self._thread = None
        self._disconnect()

    def check(self) -> bool:
        """Read the epoch once; pass a change on. True when there was one."""
        epoch = self._read_epoch()
        if epoch == self.epoch:
            return False
        self._on_change()
        self.epoch = epoch  # only once passed on: a failed ``on_change`` is tried again
        self.changes += 1
        return True

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self._wait()
                self.check()
                if failing:
                    log.warning("the change feed reaches the database again")
                    failing = False
            except Exception as exc:
                if not failing:  # one line per outage, not one per poll
                    log.warning(
                        "the change feed cannot reach the database: %s: %s",
                        type(exc).__name__,
                        exc,
                    )
                    failing = True
                self._disconnect()
                self._stop.wait(min(self._poll, RETRY_SECONDS))

    def _wait(self) -> None:
        """Until a notification arrives or ``poll_seconds`` pass (SQLite: just the latter)."""
        if not self._listen:
            self._stop.wait(self._poll)
            return
        if self._connection is None:
            # Changes made while no connection listened were not notified: check at once.
            self._connection = self._connect()
            return
        # stop_after=1: back as soon as one arrives; the others are drained by the next call.
        for _ in self._connection.notifies(timeout=self._poll, stop_after=1):
            pass

    def _connect(self) -> Any:
        raw = self._engine.raw_connection()
        connection = raw.driver_connection
        raw.detach()  # a connection of its own for good, not the pool's
        assert connection is not None
        try:
            connection.autocommit = True
            connection.execute(f"LISTEN {CHANNEL}")
        except Exception:
            with contextlib.suppress(Exception):
                connection.close()  # detached: nobody else would close it
            raise
        return connection

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
