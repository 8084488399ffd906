"""The one error root of tapevault.

Every failure the core can name is a leaf of this tree. Leaves carry data (never a formatted HTTP
body); ``tapevault.http.errors.status_of`` gives each leaf its HTTP status, and each API dialect
words it on its own wire in exactly one place (``suki_error``, ``amigo_error``, ``kore_error``;
``tapevault.http.media`` for the gateway).

    TapevaultError
    ├── ConfigError                 a setting is missing or invalid (names the setting)
    ├── AuthError                   credentials missing, malformed, wrongly signed or expired
    ├── Forbidden                   valid credentials without the right to do this
    ├── MethodNotAllowed            the path exists, but not for this method
    ├── InvalidRequest              a parameter or body the client sent is malformed
    │   ├── InvalidAudio            the body is not audio we accept (says what is wrong)
    │   │   └── UnsupportedMediaType  the body is of a media type we do not take at all
    │   └── PayloadTooLarge         the body exceeded the configured size limit
    ├── NotFound                    no such resource *for this caller* (unknown or foreign)
    │   └── NotReady                the resource exists but has no finished recording yet
    ├── Conflict                    the request does not fit the resource's state (session ended)
    ├── Gone                        past retention, or deleted (carries reason and when)
    ├── UrlRejected                 a signed media URL is expired or was altered
    ├── Unavailable                 a feature is turned off, or the audit log cannot be written
    │   ├── DatabaseUnavailable     the database cannot be reached (db/outage.py)
    │   └── StoreUnavailable        the object store cannot be reached or refused us (503)
    ├── InsufficientStorage         the disk is full: nothing of the request was kept (507)
    │   └── QuotaExceeded           the tenant's storage quota would be passed (507)
    └── StorageError                the object store failed (never shown to clients verbatim)

Where a dialect has words of its own for a refusal (the seeds' "Recording not found or
decryption in progress.", "Call recording not configured"), the core does not write them: it
raises the leaf with a ``Subject`` saying what the refusal is about, and the dialects word it
(``tapevault.http.wording``). ``message`` then holds tapevault's own plain words, for logs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Subject(enum.StrEnum):
    """What a refusal is about, when the dialects have their own words for it."""

    RECORDING = "recording"  # NotFound/NotReady: no servable recording; Gone: its audio went
    CALL = "call"  # NotFound: no such call, or none of its channels can be served
    CALL_PENDING = "call_pending"  # NotReady: the call's audio is arriving or being processed
    CALL_RECORDING_OFF = "call_recording_off"  # Unavailable: the tenant turned it off


class TapevaultError(Exception):
    """Root of every error tapevault raises on purpose."""

    subject: Subject | None = None  # set by the leaves that take one

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(TapevaultError):
    """A setting is invalid; the message names the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


class AuthError(TapevaultError):
    """The caller's credentials are missing, malformed, wrongly signed or expired."""


class Forbidden(TapevaultError):
    """The caller is authenticated but its credential lacks the role this needs."""


class MethodNotAllowed(TapevaultError):
    """The path exists, but not with this method; ``allowed`` lists the ones it takes."""

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"Method {method} not allowed.")
        self.allowed = allowed


class InvalidRequest(TapevaultError):
    """Something the client sent cannot be parsed or is out of range."""


class InvalidAudio(InvalidRequest):
    """The uploaded body is not audio tapevault accepts."""


class UnsupportedMediaType(InvalidAudio):
    """The body's media type (declared or sniffed) is not one tapevault takes."""


class PayloadTooLarge(InvalidRequest):
    """The body grew past the configured limit while it streamed in."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


class NotFound(TapevaultError):
    """Nothing of that id is visible to this caller (unknown, or another tenant's)."""

    def __init__(self, message: str, subject: Subject | None = None) -> None:
        super().__init__(message)
        self.subject = subject


class NotReady(NotFound):
    """The session exists but has no finished recording yet; retrying later may help."""

    def __init__(
        self, message: str, retry_after: int | None = None, subject: Subject | None = None
    ) -> None:
        super().__init__(message, subject)
        self.retry_after = retry_after


class Conflict(TapevaultError):
    """The request contradicts the resource's state, e.g. uploading to an ended session."""


@dataclass(frozen=True)
class GoneDetail:
    """Why a recording is no longer available, for a structured 410."""

    reason: str  # "expired" or "deleted"
    at: int  # Unix seconds when it expired or was deleted
    # Which rule removed it: the retention level ("tenant", "session", "recording") or "request".
    policy: str | None = None


class Gone(TapevaultError):
    """The recording is permanently unavailable; clients must not retry."""

    def __init__(self, message: str, detail: GoneDetail, subject: Subject | None = None) -> None:
        super().__init__(message)
        self.detail = detail
        self.subject = subject


class UrlRejected(TapevaultError):
    """A signed media URL failed verification. ``reason`` is "expired" or "invalid"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Unavailable(TapevaultError):
    """The service cannot do this now: turned off for the tenant, or a dependency (the audit
    log) failed. Nothing was served."""

    def __init__(self, message: str, subject: Subject | None = None) -> None:
        super().__init__(message)
        self.subject = subject


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached (down, our connection terminated, SQLite locked or
    unopenable); the same request may succeed once it is back."""


class StoreUnavailable(Unavailable):
    """The object store did not answer, or refused our credentials: nothing was served and the
    same request may succeed once it is back. The provider's own words go to the log only."""


class InsufficientStorage(TapevaultError):
    """No space left for the bytes (ENOSPC, EDQUOT): the request is refused whole, nothing of it
    is kept, and the same request may succeed once space is freed (``retry_after`` seconds)."""

    def __init__(self, message: str, retry_after: int | None = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(InsufficientStorage):
    """The tenant's stored audio would pass its quota; retrying does not help until audio is
    deleted or the quota raised."""

    def __init__(self, quota: int, stored: int, adding: int) -> None:
        super().__init__(
            f"The storage quota of {quota} bytes would be passed: {stored} bytes are stored "
            f"and this needs {adding} more; delete recordings or ask the operator to raise "
            "the quota.",
            retry_after=None,
        )
        self.quota = quota
        self.stored = stored
        self.adding = adding


class StorageError(TapevaultError):
    """The object store failed; details go to the log, not to the client."""
