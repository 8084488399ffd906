"""A session's merged rendition: all its audio mixed into one mono WAV on one timeline.

Contact-centre clients (the Kore dialect) want one file per conversation. For a call, the caller
and agent channels are mixed, each at its own start (``media_start_epoch_ms``); for a session of
sequential recordings, they are joined back to back. The rendition is derived: it is made by a
worker (job kind ``merge``) once every recording of the session is finished, is stored as a
recording with sequence number 0 on the ``merged`` channel, and is replaced under a new id when
its inputs change (a later upload), so a served file never changes under its id.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ulid import ULID

from tapevault.core import policy
from tapevault.core.clock import now_ms
from tapevault.core.lifecycle import PENDING, TOMBSTONES
from tapevault.core.model import (
    MERGED_CHANNEL,
    MERGED_SEQUENCE,
    JobKind,
    Recording,
    RecordingStatus,
    Session,
    Tenant,
)
from tapevault.core.signing import UrlMode
from tapevault.core.vault import RecordingLink, Vault

MERGE_PREFIX = "merge/"


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


def inputs_digest(inputs: Sequence[Recording]) -> str:
    """Names the exact audio a rendition was made from (ids and content digests)."""
    text = "\n".join(f"{r.recording_id}:{r.sha256}" for r in inputs)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def merge_inputs(recordings: Sequence[Recording], now: int, held: bool) -> list[Recording]:
    """The recordings a rendition mixes: available, still served, by sequence number."""
    return [
        r
        for r in recordings
        if r.status is RecordingStatus.AVAILABLE
        and r.channel != MERGED_CHANNEL
        and policy.gone(r, now, held=held) is None
    ]


class Renditions:
    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def merged(self, tenant: Tenant, session_id: str) -> MergedAnswer:
        """Where the session's merged file stands; queues the merge when it is due."""
        session = self.vault.find_session(tenant, session_id)
        if session is None:
            return MergedAnswer(MergeState.NONE)
        now = now_ms(self.vault.clock)
        recordings = [
            r
            for r in self.vault.repo.list_recordings(tenant.partner_id, session.session_id)
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
        rendition = self.ensure(session, inputs)
        if rendition.status is RecordingStatus.AVAILABLE:
            expires = now // 1000 + policy.url_lifetime_seconds(
                download=False, session_audio_ms=rendition.duration_ms
            )
            return MergedAnswer(
                MergeState.READY,
                session,
                self.vault.link(rendition, UrlMode.STREAM, expires, held=session.held),
            )
        if rendition.status is RecordingStatus.FAILED:
            return MergedAnswer(MergeState.FAILED, session, reason=rendition.failure_reason)
        return MergedAnswer(MergeState.PROCESSING, session)

    def ensure(self, session: Session, inputs: Sequence[Recording]) -> Recording:
        """The rendition of exactly ``inputs``: the existing one, or a new one being made."""
        repo = self.vault.repo
        digest = MERGE_PREFIX + inputs_digest(inputs)
        for _attempt in range(3):
            current = repo.get_merged(session.partner_id, session.session_id)
            if (
                current is not None
                and current.source_format == digest
                and current.status not in TOMBSTONES
            ):
                return current
            # Missing, made from other audio, or deleted/purged while its inputs remain: a new
            # one is made from the inputs as they are now.
            rendition = self._new(session, inputs, digest)
            job = self.vault.new_job(JobKind.MERGE, rendition.recording_id)
            if repo.replace_merged(current, rendition, job):
                if current is not None:
                    self.vault.discard_object(current)
                self.vault.jobs_waiting.set()
                return rendition
        # Others keep replacing it (uploads racing); report what is there now.
        found = repo.get_merged(session.partner_id, session.session_id)
        return found if found is not None else rendition

    def refresh(self, session: Session) -> None:
        """Queue the merge of a session whose recordings are all finished (called by the worker
        when a call's last channel becomes available, so the first request finds it ready)."""
        now = now_ms(self.vault.clock)
        recordings = self.vault.repo.list_recordings(session.partner_id, session.session_id)
        if any(r.status in PENDING for r in recordings):
            return
        inputs = merge_inputs(recordings, now, session.held)
        if inputs:
            self.ensure(session, inputs)

    def _new(self, session: Session, inputs: Sequence[Recording], digest: str) -> Recording:
        recording_id = str(ULID())
        return Recording(
            recording_id=recording_id,
            session_id=session.session_id,
            partner_id=session.partner_id,
            sequence_number=MERGED_SEQUENCE,
            status=RecordingStatus.PROCESSING,
            storage_key=f"{session.partner_id}/{session.session_id}/{recording_id}.wav",
            sample_rate=0,
            channels=0,
            bits_per_sample=0,
            duration_ms=0,
            size_bytes=0,
            sha256="",
            created_ms=now_ms(self.vault.clock),
            expires_ms=min(r.expires_ms for r in inputs),
            source_format=digest,
            channel=MERGED_CHANNEL,
        )
