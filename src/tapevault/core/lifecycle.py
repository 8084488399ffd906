"""The lifecycle rules of sessions and recordings, in one place.

A session's stored status says what the client did (created it, sent audio, ended it); what a
client is shown also depends on its recordings' states:

    created      nothing received yet, not ended
    in_progress  audio received (or arriving), not ended
    processing   ended, and some recording is still arriving or being finalized
    completed    ended, and every recording is finalized (available), or there are none
    failed       ended, nothing available, and some recording failed

A session with some recordings available and one failed is ``completed``: the failure shows on
that recording, with its reason, and the others are served.
"""

from __future__ import annotations

from collections.abc import Sequence

from tapevault.core.model import Recording, RecordingStatus, Session, SessionStatus

PENDING = frozenset({RecordingStatus.RECEIVING, RecordingStatus.PROCESSING})
# Recordings whose audio is gone (or going): purged by retention or deleted on request.
TOMBSTONES = frozenset({RecordingStatus.EXPIRED, RecordingStatus.DELETED})


def session_status(session: Session, recordings: Sequence[Recording]) -> SessionStatus:
    return status_of(
        session,
        recorded=bool(recordings),
        pending=any(r.status in PENDING for r in recordings),
        available=any(r.status is RecordingStatus.AVAILABLE for r in recordings),
    )


def status_of(session: Session, *, recorded: bool, pending: bool, available: bool) -> SessionStatus:
    """The same rule from three facts about the recordings (whether there are any, whether
    one is pending, whether one is available), for callers that aggregate rather than load
    them."""
    if session.status is not SessionStatus.COMPLETED:
        if recorded or session.status is SessionStatus.IN_PROGRESS:
            return SessionStatus.IN_PROGRESS
        return SessionStatus.CREATED
    if pending:
        return SessionStatus.PROCESSING
    if recorded and not available:
        return SessionStatus.FAILED
    return SessionStatus.COMPLETED


def retry_delay_seconds(attempts: int) -> int:
    """Backoff between finalization attempts: 2, 4, 8, 16... seconds, at most 5 minutes."""
    return int(min(300, 2 ** max(1, attempts)))


MAX_ATTEMPTS = 5
# How long a worker holds a job without renewing it (TAPEVAULT_JOB_LEASE's default): a running
# job's lease is renewed a third of this apart, so it bounds only how long a dead worker's (or a
# dead node's) job waits before another takes it, not how long a job may run.
LEASE_SECONDS = 60
