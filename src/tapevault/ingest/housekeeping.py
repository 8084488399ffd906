"""Housekeeping the worker does between jobs: purge audio past retention, drop access records
past the log's own retention (6 years by default), drop webhook deliveries settled more than
``WEBHOOK_HISTORY_SECONDS`` ago (and the events nothing refers to any more), and sweep scratch
files that crashed processes left (spooled bodies, temporaries, expired tus uploads:
``tapevault.ingest.scratch``).

With several nodes (or ``TAPEVAULT_PROCESSES``) on one database, the purge and the pruning are
shared work: each run first claims the task's lease (``claim``, by the database's clock), so one
process at a time does it, instead of every node logging and erasing the same recordings; a
holder renews its lease with each run, and when it dies another takes the task once the lease
(two intervals) lapses. The scratch sweep is each node's own (its own disk).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tapevault.core.auditlog import AuditStore
from tapevault.core.clock import Clock, now_ms
from tapevault.core.retention import Retention

log = logging.getLogger("tapevault.housekeeping")

AUDIT_PRUNE_SECONDS = 24 * 3600.0
# Settled webhook deliveries stay listable (and replayable) this long, then go: the delivery log
# is an operator's debugging aid, not a record (the access log is the record).
WEBHOOK_HISTORY_SECONDS = 90 * 24 * 3600
SCRATCH_SWEEP_SECONDS = 300.0


class Housekeeping:
    def __init__(
        self,
        retention: Retention,
        audit: AuditStore,
        clock: Clock,
        *,
        purge_seconds: float,
        audit_retention_seconds: int,
        sweep_scratch: Callable[[], int] | None = None,
        prune_webhooks: Callable[[int], tuple[int, int]] | None = None,
        claim: Callable[[str, float], bool] | None = None,
    ) -> None:
        self.retention = retention
        self.audit = audit
        self.clock = clock
        self.purge_seconds = purge_seconds
        self.audit_retention_ms = audit_retention_seconds * 1000
        self._next_purge = 0.0
        self._next_prune = 0.0
        self.sweep_scratch = sweep_scratch
        self.prune_webhooks = prune_webhooks
        # claim(task, seconds): whether this process holds the shared task for that long now.
        self.claim = claim
        self._next_sweep = time.monotonic() + SCRATCH_SWEEP_SECONDS  # start-up swept already
        self._lock = threading.Lock()

    def run_due(self) -> None:
        """Whatever is due now; each part logs and survives its own failure. Several worker
        threads call this: one does the work, the others go on with their jobs."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._run_due()
        finally:
            self._lock.release()

    def _run_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_purge:
            self._next_purge = now + self.purge_seconds
            try:
                if self._claimed("purge", self.purge_seconds):
                    self.retention.purge_due()
            except Exception:
                log.exception(
                    "the retention purge failed; it runs again in %ss", self.purge_seconds
                )
        if now >= self._next_prune:
            self._next_prune = now + AUDIT_PRUNE_SECONDS
            try:
                dropped = 0
                if self._claimed("audit-prune", AUDIT_PRUNE_SECONDS):
                    dropped = self.audit.prune(now_ms(self.clock) - self.audit_retention_ms)
                if dropped:
                    log.info("dropped %d access record(s) past the audit retention", dropped)
            except Exception:
                log.exception("pruning the access log failed")
            if self.prune_webhooks is not None and self._claimed(
                "webhook-prune", AUDIT_PRUNE_SECONDS
            ):
                try:
                    deliveries, events = self.prune_webhooks(
                        now_ms(self.clock) - WEBHOOK_HISTORY_SECONDS * 1000
                    )
                    if deliveries or events:
                        log.info(
                            "dropped %d webhook delivery(ies) and %d event(s) past %d days",
                            deliveries,
                            events,
                            WEBHOOK_HISTORY_SECONDS // 86400,
                        )
                except Exception:
                    log.exception("pruning the webhook history failed")
        if self.sweep_scratch is not None and now >= self._next_sweep:
            self._next_sweep = now + SCRATCH_SWEEP_SECONDS
            try:
                self.sweep_scratch()
            except Exception:
                log.exception("sweeping stale scratch files failed")

    def _claimed(self, task: str, interval: float) -> bool:
        """Whether this process runs ``task`` this time: held for two intervals (plus a minute
        for a slow run), so its holder renews it in time and a dead holder's lapses."""
        return self.claim is None or self.claim(task, 2 * interval + 60)
