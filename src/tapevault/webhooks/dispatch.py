"""The delivery loop the worker runs: lease a due delivery, send it, record what happened.

Threads of their own beside the finalization threads (``Worker``), so a receiver that takes its
full timeout delays no recording. Leases are taken by the database's clock for the timeout plus
a margin; a worker killed mid-send leaves a lease that lapses (or that a restarted worker on the
same host frees at once), and the delivery is sent again: at least once, never lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from tapevault.core.webhooks import (
    RETRY_SCHEDULE_SECONDS,
    DeliveryStatus,
    next_attempt_delay_ms,
)
from tapevault.db.webhookstore import Leased, SqlWebhookStore
from tapevault.errors import Unavailable
from tapevault.ingest.liveness import is_gone
from tapevault.webhooks import delivery_outcome
from tapevault.webhooks.sender import post, signed_headers
from tapevault.webhooks.ssrf import AddressPolicy

log = logging.getLogger("tapevault.webhooks")

THREADS = 4  # receivers sent to at once by one worker process
LEASE_MARGIN_SECONDS = 30
# With no enabled endpoint anywhere nothing can be due: the threads sleep, woken by ``wake``
# (the change feed hears an endpoint added, in any process) or after this long at most.
IDLE_SECONDS = 30.0


class Dispatcher:
    def __init__(
        self,
        store: SqlWebhookStore,
        owner: str,
        policy: AddressPolicy,
        *,
        timeout_seconds: float = 15.0,
        schedule: Sequence[int] = RETRY_SCHEDULE_SECONDS,
        poll_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.owner = owner
        self.policy = policy
        self.timeout = timeout_seconds
        self.schedule = tuple(schedule)
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._wake = threading.Event()
        self._checked = threading.Lock()
        self._endpoints: bool | None = None  # whether any is enabled, as last read (None: ask)
        self._endpoints_read = 0.0

    @property
    def lease_ms(self) -> int:
        return int((self.timeout + LEASE_MARGIN_SECONDS) * 1000)

    def run_once(self) -> bool:
        """Send one due delivery; False when none was due."""
        leased = self.store.lease_delivery(self.owner, self.store.database_now_ms(), self.lease_ms)
        if leased is None:
            return False
        self._send(leased)
        return True

    def run_until_idle(self, limit: int = 10_000) -> int:
        """Send what is due now (tests, and `worker --once`); how many attempts were made."""
        sent = 0
        while sent < limit and self.run_once():
            sent += 1
        return sent

    def _send(self, leased: Leased) -> None:
        delivery, endpoint = leased.delivery, leased.endpoint
        now_ms = self.store.database_now_ms()
        headers = signed_headers(
            endpoint.signing_secrets(now_ms), delivery.event_id, delivery.payload, time.time()
        )
        outcome = post(endpoint.url, delivery.payload.encode(), headers, self.policy, self.timeout)
        delivery_outcome(outcome.label)
        attempts = delivery.attempts + 1
        after_ms = self.store.database_now_ms()
        if outcome.delivered:
            self.store.settle(
                delivery.delivery_id,
                self.owner,
                status=DeliveryStatus.DELIVERED,
                http_status=outcome.status,
                error=None,
                attempted_ms=after_ms,
            )
            return
        if outcome.gone:
            log.warning("webhook endpoint %s answered 410: disabled", endpoint.endpoint_id)
            self.store.settle(
                delivery.delivery_id,
                self.owner,
                status=DeliveryStatus.FAILED,
                http_status=outcome.status,
                error=outcome.error,
                attempted_ms=after_ms,
            )
            self.store.disable(endpoint.endpoint_id, "the receiver answered 410 Gone")
            return
        delay = next_attempt_delay_ms(attempts, outcome, self.schedule)
        if delay is None:
            log.warning(
                "webhook delivery %s given up after %d attempts: %s",
                delivery.delivery_id,
                attempts,
                outcome.error,
            )
        self.store.settle(
            delivery.delivery_id,
            self.owner,
            status=DeliveryStatus.PENDING if delay is not None else DeliveryStatus.FAILED,
            http_status=outcome.status,
            error=outcome.error,
            attempted_ms=after_ms,
            next_attempt_ms=None if delay is None else after_ms + delay,
        )

    def recover(self) -> int:
        """Free deliveries leased by processes of this host that no longer run."""
        freed = 0
        for owner in self.store.lease_owners():
            if owner != self.owner and is_gone(owner, self.owner):
                freed += self.store.release_leases(owner)
        if freed:
            log.warning("reclaimed %d webhook delivery(ies) from processes that died", freed)
        return freed

    def wake(self) -> None:
        """An endpoint may have been added (the change feed says something changed): look
        again now instead of sleeping out ``IDLE_SECONDS``. The set event is the request to
        look: a wake-up arriving while a read is in flight (which may have begun before the
        endpoint's commit) stays set, so the next look reads again."""
        self._wake.set()

    def _any_endpoint(self) -> bool:
        """Whether any endpoint is enabled: read when woken, and every ``IDLE_SECONDS`` (an
        endpoint removed or disabled meanwhile; a wake-up lost while the feed reconnected)."""
        with self._checked:
            now = time.monotonic()
            if (
                self._endpoints is None
                or self._wake.is_set()
                or now - self._endpoints_read >= IDLE_SECONDS
            ):
                self._wake.clear()  # before the read: a wake-up during it is kept
                self._endpoints = self.store.any_enabled()
                self._endpoints_read = now
            return self._endpoints

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._any_endpoint():
                    # Idle: no query until woken (was: every thread leased every second).
                    self._wake.wait(IDLE_SECONDS)
                    continue
                if self.run_once():
                    continue
            except Unavailable as exc:
                log.warning("webhook delivery waits: %s", exc)
            except Exception:
                log.exception("webhook delivery iteration failed; continuing")
            self._stop.wait(self.poll_seconds)

    def start(self, threads: int = THREADS) -> None:
        self._stop.clear()
        self._endpoints = None  # ask at once
        for index in range(threads):
            thread = threading.Thread(
                target=self._loop, name=f"tapevault-webhooks-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking deliveries and wait up to ``timeout`` in all for those being sent; one
        still waiting for its receiver then is abandoned (its lease lapses, it is sent again)."""
        self._stop.set()
        self._wake.set()  # idle threads wait on this one
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
