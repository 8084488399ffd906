"""What every lookup of the services shares: the limits on ids, and the refusals they raise.

A foreign id is indistinguishable from an unknown one: each service looks inside the caller's
tenant only and answers ``NotFound`` for both.
"""

from __future__ import annotations

from tapevault.errors import Conflict, Gone, GoneDetail

RECORDING_NOT_FOUND = "Recording not found or decryption in progress."
RECORDING_EXPIRED = "Recording has expired per retention policy."
RECORDING_DELETED = "Recording has been deleted."
SESSION_NOT_FOUND = "Session not found."
MAX_ID = 64
NOT_READY_RETRY_SECONDS = 2


def channel_taken(channel: str) -> Conflict:
    """The 409 for a second recording of a call channel (one that failed may be replaced)."""
    return Conflict(f"The {channel} channel of this call already has audio.")


def gone_error(detail: GoneDetail) -> Gone:
    """The 410 for a recording that expired (the seed's words) or was deleted."""
    return Gone(RECORDING_DELETED if detail.reason == "deleted" else RECORDING_EXPIRED, detail)
