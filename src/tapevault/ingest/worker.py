"""The background worker: leases jobs from the database and runs them.

Runs as threads inside ``tapevault serve`` (the default) or alone as ``tapevault worker``, on any
number of nodes sharing one database. Jobs are leased, not locked: a worker holds a job for
``TAPEVAULT_JOB_LEASE`` by the database's clock and renews the lease while the job runs (a third
of the lease apart), so a long decode is never taken from a live worker; a worker killed mid-job
stops renewing, and the job is taken again by any node's worker once the lease lapses. A restarted
server also reclaims at once the jobs of its own node's dead processes (their owner ids are gone).
A job bound to a node (a recovered live stream, whose spool is on that node's disk) is leased
only there. Finalization is idempotent, so running a job twice is safe.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from tapevault.core import lifecycle
from tapevault.core.model import Job
from tapevault.errors import Unavailable
from tapevault.ingest.finalize import Finalizer
from tapevault.ingest.housekeeping import Housekeeping
from tapevault.ingest.liveness import is_gone, process_id
from tapevault.ingest.recovery import SPOOL_WAIT_SECONDS, recover_streams
from tapevault.webhooks.dispatch import Dispatcher

log = logging.getLogger("tapevault.worker")

RECOVERY_SECONDS = 30.0


def worker_id(node: str | None = None) -> str:
    """Unique per process start, on ``node`` (see ``liveness``)."""
    return process_id(node)


class Worker:
    def __init__(
        self,
        finalizer: Finalizer,
        owner: str,
        poll_seconds: float = 1.0,
        housekeeping: Housekeeping | None = None,
        webhooks: Dispatcher | None = None,
        lease_seconds: float = lifecycle.LEASE_SECONDS,
        spool_wait_seconds: int = SPOOL_WAIT_SECONDS,
    ) -> None:
        self.finalizer = finalizer
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.webhooks = webhooks  # webhook deliveries, on threads of their own
        self.owner = owner
        self.housekeeping = housekeeping
        self.poll_seconds = poll_seconds
        # How long a stream recovered here stays its spool node's job (TAPEVAULT_STREAM_NODE_WAIT).
        self.spool_wait_seconds = spool_wait_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def reclaim_dead_local_leases(self) -> int:
        """Free jobs leased by processes of this host that are no longer running.

        Without this a job held by a SIGKILLed server would wait for its lease to lapse; with
        it, the restarted server takes the job again at once. Owners on other hosts are left to
        the lease timeout.
        """
        freed = 0
        for owner in self.finalizer.lease_owners():
            if owner != self.owner and is_gone(owner, self.owner):
                freed += self.finalizer.release_leases(owner)
        return freed

    def run_once(self) -> bool:
        """Lease and run one due job; False when there was none."""
        # The finalizer leases on this node: the jobs reserved for it (its spools) too.
        job = self.finalizer.lease(self.owner, self.lease_ms)
        if job is None:
            return False
        with self._renewing(job):
            self.finalizer.run(job)
        return True

    @contextlib.contextmanager
    def _renewing(self, job: Job) -> Iterator[None]:
        """Renew the job's lease every third of its length while the block runs, so that no
        other node takes a job this worker is still doing (a decode may outlast the lease)."""
        done = threading.Event()
        finalizer = self.finalizer

        def renew() -> None:
            while not done.wait(self.lease_ms / 3000):
                try:
                    if not finalizer.renew_lease(job.job_id, self.owner, self.lease_ms):
                        return  # finished meanwhile, or lapsed and taken: nothing to hold
                except Exception as exc:  # the database away: the lease may lapse, as designed
                    log.warning("cannot renew the lease of job %s: %s", job.job_id, exc)

        thread = threading.Thread(target=renew, name=f"tapevault-lease-{job.job_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            # A renewal stuck on an unreachable database must not hold the worker: the thread
            # ends by itself once its call returns, and renews nothing after ``done``.
            thread.join(timeout=5)

    def run_until_idle(self, limit: int = 10_000) -> int:
        """Run due jobs until none is left; returns how many ran (tests and `worker --once`)."""
        ran = 0
        while ran < limit and self.run_once():
            ran += 1
        return ran

    def recover(self) -> None:
        """Take back what dead processes left: job leases and half-written live recordings."""
        freed = self.reclaim_dead_local_leases()
        if freed:
            log.warning("reclaimed %d job(s) from processes that died", freed)
        if self.webhooks is not None:
            self.webhooks.recover()
        recovered = recover_streams(
            self.finalizer.vault.ingest, self.owner, spool_wait_seconds=self.spool_wait_seconds
        )
        if recovered:
            log.warning("recovered %d recording(s) left half-written by a dead process", recovered)

    def _loop(self) -> None:
        waiting = self.finalizer.vault.jobs.waiting
        next_recovery = time.monotonic() + RECOVERY_SECONDS
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_recovery:
                    # Writers on other hosts are judged by their heartbeats, so look again now
                    # and then, not only at start-up.
                    next_recovery = time.monotonic() + RECOVERY_SECONDS
                    self.recover()
                if self.housekeeping is not None:
                    self.housekeeping.run_due()
                if self.run_once():
                    continue
            except Unavailable as exc:
                # An outage (the database): retried every poll, so one line, not a traceback.
                log.warning("worker waits: %s", exc)
            except Exception:
                log.exception("worker iteration failed; continuing")
            waiting.wait(self.poll_seconds)
            waiting.clear()

    def start(self, threads: int = 1) -> None:
        if self.webhooks is not None:
            self.webhooks.start()
        for index in range(threads):
            thread = threading.Thread(
                target=self._loop, name=f"tapevault-worker-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self.webhooks is not None:
            self.webhooks.stop(min(timeout, 5.0))  # a slow receiver must not hold a shutdown
        self.finalizer.vault.jobs.waiting.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def run_forever(self) -> None:
        if self.webhooks is not None:
            self.webhooks.start()
        try:
            self._loop()
        finally:
            if self.webhooks is not None:
                self.webhooks.stop()
