"""When a session's merged rendition is due, and what it is made from (pure rules, no I/O).

Kore's clients ask for a conversation's merged file once it is over and expect ``success`` on
the first request, so the merge is queued by the state change that makes the audio final: a
session ending with its recordings processed, or the last recording of an ended session (or of a
call, which may never be ended) finishing. The repository runs ``due_merge`` inside that change's
transaction, with the session locked, so of two recordings finishing together exactly one sees
the other finished. A session of one recording needs no merge: that recording is served as it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ulid import ULID

from tapevault.core import policy
from tapevault.core.lifecycle import PENDING, TOMBSTONES
from tapevault.core.model import (
    MERGED_CHANNEL,
    MERGED_SEQUENCE,
    Recording,
    RecordingStatus,
    Session,
    SessionKind,
    SessionStatus,
)

MERGE_PREFIX = "merge/"


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


def new_rendition(session: Session, inputs: Sequence[Recording], now: int) -> Recording:
    """A rendition of exactly ``inputs``, still to be made (PROCESSING), under a new id."""
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
        created_ms=now,
        expires_ms=min(r.expires_ms for r in inputs),
        source_format=MERGE_PREFIX + inputs_digest(inputs),
        channel=MERGED_CHANNEL,
    )


def is_current(rendition: Recording | None, inputs: Sequence[Recording]) -> bool:
    """``rendition`` is (or is being) made from exactly ``inputs`` and was not removed."""
    return (
        rendition is not None
        and rendition.source_format == MERGE_PREFIX + inputs_digest(inputs)
        and rendition.status not in TOMBSTONES
    )


def due_merge(session: Session, recordings: Sequence[Recording], now: int) -> Recording | None:
    """The rendition to queue now, or None: the session's audio is final (it ended, or it is a
    call, which is complete whenever nothing is arriving), none of it is still being processed,
    it holds two or more servable recordings, and the current rendition is not of exactly them.
    """
    if session.status is not SessionStatus.COMPLETED and session.kind is not SessionKind.CALL:
        return None
    audio = [r for r in recordings if r.channel != MERGED_CHANNEL]
    if any(r.status in PENDING for r in audio):
        return None
    inputs = merge_inputs(audio, now, session.held)
    if len(inputs) < 2:
        return None
    current = next((r for r in recordings if r.channel == MERGED_CHANNEL), None)
    if is_current(current, inputs):
        return None
    return new_rendition(session, inputs, now)
