"""Work for the worker: new jobs, the merge rule a state change applies, and the wake-up.

Jobs are written by the services in the same transaction as the change that needs them (an
upload's finalization, a session's merged rendition); this module makes them and wakes an
in-process worker once they are committed.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence

from tapevault.core import mergeplan
from tapevault.core.clock import Clock, now_ms
from tapevault.core.model import Job, JobKind, Recording, Session
from tapevault.core.peaks import peaks_keys
from tapevault.core.ports import Delete, MergePlanner, MergeQueued

log = logging.getLogger("tapevault.vault")


class Jobs:
    def __init__(self, clock: Clock, store: Delete) -> None:
        self.clock = clock
        self.store = store
        # Set whenever a job is queued in this process, so an in-process worker wakes at once.
        self.waiting = threading.Event()

    def new_job(self, kind: JobKind, recording_id: str) -> Job:
        """A job due now, not yet leased."""
        now = now_ms(self.clock)
        return Job(uuid.uuid4().hex, kind, recording_id, 0, now, None, None, None, now, None)

    def merge_planner(self) -> MergePlanner:
        """The rule a state change's transaction applies to queue a session's merged rendition
        (see core/mergeplan.py), with a job due now."""
        now = now_ms(self.clock)

        def plan(session: Session, recordings: Sequence[Recording]) -> tuple[Recording, Job] | None:
            rendition = mergeplan.due_merge(session, recordings, now)
            if rendition is None:
                return None
            return rendition, self.new_job(JobKind.MERGE, rendition.recording_id)

        return plan

    def merge_queued(self, queued: MergeQueued | None) -> None:
        """After a committed change queued a merge: wake the worker, remove the replaced file."""
        if queued is None:
            return
        if queued.replaced is not None:
            self.discard_object(queued.replaced)
        self.waiting.set()

    def discard_object(self, recording: Recording) -> None:
        """Remove a superseded derived file (a replaced rendition); a failure only leaves an
        orphan file behind, which is logged, never an error for the caller."""
        for key in (recording.storage_key, *peaks_keys(recording.storage_key)):
            try:
                self.store.delete(key)
            except Exception:
                log.warning("could not remove %s", key, exc_info=True)
