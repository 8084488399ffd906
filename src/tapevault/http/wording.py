"""The dialects' words for the refusals the core names by subject (``tapevault.errors.Subject``).

The core says *what* was refused (no servable recording, a call not processed yet, call
recording turned off); the seeds prescribe how their APIs say it, and this is the one place
those words live. Every renderer of an error (the Suki, Amigo, Kore and native error shapes,
the media gateway, WebSocket close reasons, the access log's ``error``) goes through ``say``,
so a refusal reads the same whichever path surfaced it: the media gateway, the native API and
the Kore dialect have no words of their own for these, and have always used the seeds'.
"""

from __future__ import annotations

from collections.abc import Mapping

from tapevault.errors import Gone, Subject, TapevaultError

# suki-form-filling-session-recording.md: the 404 and 410 of a session's recording.
RECORDING_NOT_FOUND = "Recording not found or decryption in progress."
RECORDING_EXPIRED = "Recording has expired per retention policy."
RECORDING_DELETED = "Recording has been deleted."  # the seed has none; worded like the above
SUKI_WORDS: Mapping[Subject, str] = {Subject.RECORDING: RECORDING_NOT_FOUND}

# amigo-recordings-api.md: the 404 and 503 of a call's recording.
CALL_NOT_FOUND = "Recording not found"
CALL_RECORDING_OFF = "Call recording not configured"
CALL_NOT_READY = "Recording not ready yet"  # the seed has none; worded like its 404
AMIGO_WORDS: Mapping[Subject, str] = {
    Subject.CALL: CALL_NOT_FOUND,
    Subject.CALL_PENDING: CALL_NOT_READY,
    Subject.CALL_RECORDING_OFF: CALL_RECORDING_OFF,
}

WORDS: Mapping[Subject, str] = {**SUKI_WORDS, **AMIGO_WORDS}


def say(exc: TapevaultError) -> str:
    """What the client is told of ``exc``: the seeds' words for its subject, if it has one,
    else its own message."""
    if exc.subject is None:
        return exc.message
    if isinstance(exc, Gone) and exc.subject is Subject.RECORDING:
        return RECORDING_DELETED if exc.detail.reason == "deleted" else RECORDING_EXPIRED
    return WORDS[exc.subject]
