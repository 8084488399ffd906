"""What every lookup of the services shares: the limits on ids, and the refusals they raise.

A foreign id is indistinguishable from an unknown one: each service looks inside the caller's
tenant only and answers ``NotFound`` for both. Refusals the seeds word (a recording not found,
expired or deleted) carry a ``Subject`` and tapevault's own plain words; each dialect says them
its own way (``tapevault.http.wording``).
"""

from __future__ import annotations

from tapevault.errors import Conflict, Gone, GoneDetail, NotFound, NotReady, Subject

SESSION_NOT_FOUND = "Session not found."
MAX_ID = 64
NOT_READY_RETRY_SECONDS = 2


def channel_taken(channel: str) -> Conflict:
    """The 409 for a second recording of a call channel (one that failed may be replaced)."""
    return Conflict(f"The {channel} channel of this call already has audio.")


def gone_error(detail: GoneDetail) -> Gone:
    """The 410 for a recording that expired or was deleted."""
    return Gone(f"The recording's audio was {detail.reason}.", detail, Subject.RECORDING)


def no_recording() -> NotFound:
    """The 404 for a recording (or a session's recordings) that cannot be served: unknown,
    another tenant's, or not finished."""
    return NotFound("No servable recording.", Subject.RECORDING)


def recording_not_ready() -> NotReady:
    """The 404 with ``Retry-After`` for a session whose recordings are still arriving or being
    processed."""
    return NotReady(
        "No recording is finished yet.",
        retry_after=NOT_READY_RETRY_SECONDS,
        subject=Subject.RECORDING,
    )
