"""A session's merged rendition: all its audio mixed into one mono WAV on one timeline.

Contact-centre clients (the Kore dialect) want one file per conversation. For a call, the caller
and agent channels are mixed, each at its own start (``media_start_epoch_ms``); for a session of
sequential recordings, they are joined back to back. The rendition is derived: it is made by a
worker (job kind ``merge``), queued by the change that makes the session's audio final (see
core/mergeplan.py) or, failing that, by the first request; it is stored as a recording with
sequence number 0 on the ``merged`` channel, and is replaced under a new id when its inputs
change (a later upload), so a served file never changes under its id. A session of a single
recording has no rendition: that recording is the answer, unmixed.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tapevault.core import policy
from tapevault.core.clock import now_ms
from tapevault.core.lifecycle import PENDING
from tapevault.core.links import RecordingLink
from tapevault.core.mergeplan import is_current, merge_inputs, new_rendition
from tapevault.core.model import Job, JobKind, Recording, RecordingStatus, Session, Tenant
from tapevault.core.signing import UrlMode
from tapevault.core.vault import Vault


class MergeState(enum.StrEnum):
    READY = "ready"  # the merged file is available
    RECEIVING = "receiving"  # audio is still arriving (a live call or stream)
    PROCESSING = "processing"  # recordings or the merge itself are being made
    NONE = "none"  # unknown session, no audio, or past retention
    FAILED = "failed"  # every recording failed, or the merge did


@dataclass(frozen=True, slots=True)
class MergedAnswer:
    state: MergeState
    session: Session | None = None
    link: RecordingLink | None = None
    reason: str | None = None


class RenditionRepository(Protocol):
    def list_recordings(self, partner_id: str, session_id: str) -> Sequence[Recording]: ...

    def get_merged(self, partner_id: str, session_id: str) -> Recording | None: ...

    def replace_merged(self, old: Recording | None, new: Recording, job: Job) -> bool: ...


class Renditions:
    def __init__(self, vault: Vault, repo: RenditionRepository) -> None:
        self.vault = vault
        self.repo = repo

    def merged(self, tenant: Tenant, session_id: str) -> MergedAnswer:
        """Where the session's merged file stands; queues the merge when it is due."""
        session = self.vault.sessions.find_session(tenant, session_id)
        if session is None:
            return MergedAnswer(MergeState.NONE)
        now = now_ms(self.vault.clock)
        recordings = [
            r
            for r in self.repo.list_recordings(tenant.partner_id, session.session_id)
            if policy.gone(r, now, held=session.held) is None
        ]
        if any(r.status is RecordingStatus.RECEIVING for r in recordings):
            return MergedAnswer(MergeState.RECEIVING, session)
        if any(r.status in PENDING for r in recordings):
            return MergedAnswer(MergeState.PROCESSING, session)
        inputs = merge_inputs(recordings, now, session.held)
        if not inputs:
            failed = [r for r in recordings if r.status is RecordingStatus.FAILED]
            if failed:
                reasons = "; ".join(sorted({r.failure_reason or "unknown" for r in failed}))
                return MergedAnswer(MergeState.FAILED, session, reason=reasons)
            return MergedAnswer(MergeState.NONE, session)
        # One recording is its own merged file: served as it is, never mixed.
        rendition = inputs[0] if len(inputs) == 1 else self.ensure(session, inputs)
        if rendition.status is RecordingStatus.AVAILABLE:
            expires = now // 1000 + policy.url_lifetime_seconds(
                download=False, session_audio_ms=rendition.duration_ms
            )
            return MergedAnswer(
                MergeState.READY,
                session,
                self.vault.links.link(
                    rendition,
                    UrlMode.STREAM,
                    expires,
                    held=session.held,
                    delivery=tenant.delivery,
                ),
            )
        if rendition.status is RecordingStatus.FAILED:
            return MergedAnswer(MergeState.FAILED, session, reason=rendition.failure_reason)
        return MergedAnswer(MergeState.PROCESSING, session)

    def ensure(self, session: Session, inputs: Sequence[Recording]) -> Recording:
        """The rendition of exactly ``inputs``: the existing one, or a new one being made (the
        fallback when no state change queued it, e.g. a session that was never ended)."""
        repo = self.repo
        for _attempt in range(3):
            current = repo.get_merged(session.partner_id, session.session_id)
            if current is not None and is_current(current, inputs):
                return current
            # Missing, made from other audio, or deleted/purged while its inputs remain: a new
            # one is made from the inputs as they are now.
            rendition = new_rendition(session, inputs, now_ms(self.vault.clock))
            job = self.vault.jobs.new_job(JobKind.MERGE, rendition.recording_id)
            if repo.replace_merged(current, rendition, job):
                if current is not None:
                    self.vault.jobs.discard_object(current)
                self.vault.jobs.waiting.set()
                return rendition
        # Others keep replacing it (uploads racing); report what is there now.
        found = repo.get_merged(session.partner_id, session.session_id)
        return found if found is not None else rendition
