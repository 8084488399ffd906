"""The lifecycle rules: how long a URL lives and how long a recording is kept.

These are the seed's rules (suki-audio-streaming-and-download-guide.md), in one place:
streaming URLs live 15 minutes for sessions of up to 15 minutes of audio, and the session's audio
length plus 10 minutes above that; download URLs live one hour; recordings are kept for the
partner's retention (7 days by default) counted from the session's creation, then answer 410. No
URL promises more than retention allows: its expiry is cut back to the retention end of what it
grants (``capped_expiry``).
"""

from __future__ import annotations

import math
import re

from tapevault.core.model import Recording, RecordingStatus, Session
from tapevault.errors import GoneDetail, InvalidRequest

STREAM_MIN_SECONDS = 15 * 60  # also the longest session that still counts as short
STREAM_GRACE_SECONDS = 10 * 60
DOWNLOAD_SECONDS = 60 * 60
# Amigo's recording URLs "expire after 1 hour", whatever the mode.
CALL_URL_SECONDS = 60 * 60
# Like S3's presigned URLs: no URL outlives a week, whatever the audio length.
MAX_URL_SECONDS = 7 * 24 * 3600
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600
MAX_RETENTION_SECONDS = 100 * 365 * 86400  # a century: beyond, a "retention" is a typo or an attack

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}
# ASCII digits only: int() would also read "１h" or "٣h", which no person means to type.
_DURATION = re.compile(r"^\s*([0-9]{1,9})\s*([smhdy]?)\s*$")


def url_lifetime_seconds(*, download: bool, session_audio_ms: int) -> int:
    """Seconds a freshly signed URL stays valid."""
    if download:
        return DOWNLOAD_SECONDS
    audio_seconds = math.ceil(session_audio_ms / 1000)
    # The guide: "15 minutes for short sessions. For sessions longer than 15 minutes, ... session
    # length plus 10 minutes" -- a step at 15 minutes of audio, not max(15, length + 10).
    if audio_seconds <= STREAM_MIN_SECONDS:
        return STREAM_MIN_SECONDS
    return min(audio_seconds + STREAM_GRACE_SECONDS, MAX_URL_SECONDS)


def capped_expiry(expires: int, retention_end_ms: int, *, held: bool = False) -> int:
    """A URL's expiry (Unix seconds) cut back so that it never outlives what it grants: at
    most the retention end, rounded down to a whole second (a URL issued 11 s before the end
    carries 11 s). A legal hold serves a recording past its retention: no cap then.
    """
    if held:
        return expires
    return min(expires, retention_end_ms // 1000)


def retention_expiry_ms(session_created_ms: int, retention_seconds: int) -> int:
    """When a recording of a session created at ``session_created_ms`` stops being served."""
    return session_created_ms + retention_seconds * 1000


def is_expired(expires_ms: int, now_ms: int) -> bool:
    """Retention is over at ``expires_ms`` exactly."""
    return now_ms >= expires_ms


def gone(recording: Recording, now_ms: int, *, held: bool = False) -> GoneDetail | None:
    """Why a recording may no longer be served, or None while it may.

    Deleted is final. Otherwise a legal hold keeps a recording served past its retention (it is
    preserved, and those who hold it need to hear it); without one, a recording is expired from
    ``expires_ms`` on, whether or not the purge has removed its audio yet.
    """
    if recording.status is RecordingStatus.DELETED:
        at = (recording.purged_ms or now_ms) // 1000
        return GoneDetail("deleted", at, "request")
    if held:
        return None
    if recording.status is RecordingStatus.EXPIRED or is_expired(recording.expires_ms, now_ms):
        return GoneDetail("expired", recording.expires_ms // 1000, recording.retention_policy)
    return None


def check_retention(seconds: int | None) -> int | None:
    """A retention override as given (None clears it), or ``InvalidRequest``."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidRequest("A retention is a whole number of seconds.")
    if not 1 <= seconds <= MAX_RETENTION_SECONDS:
        raise InvalidRequest(
            f"A retention is from 1 second to {MAX_RETENTION_SECONDS} (100 years)."
        )
    return seconds


def retention_expiry(
    tenant_seconds: int, session: Session, recording_seconds: int | None = None
) -> tuple[int, str]:
    """(expires_ms, level) of a recording of ``session``: the most specific retention set,
    recording over session over tenant, counted from the session's creation."""
    if recording_seconds is not None:
        seconds, level = recording_seconds, "recording"
    elif session.retention_seconds is not None:
        seconds, level = session.retention_seconds, "session"
    else:
        seconds, level = tenant_seconds, "tenant"
    return retention_expiry_ms(session.created_ms, seconds), level


def parse_duration(text: str) -> int:
    """Parse ``30s``, ``15m``, ``12h``, ``7d``, ``6y`` (365-day years) or bare seconds into a
    positive count of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise InvalidRequest(f"invalid duration {text!r}: use a number with s, m, h, d or y")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise InvalidRequest(f"invalid duration {text!r}: must be positive")
    return seconds
