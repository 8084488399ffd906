"""The client's one error root. Every failure a caller can act on is a leaf of this tree; lower
level errors (httpx's) are translated once, at the boundary (``raise ... from exc``).

    ClientError
    ├── TransportError          no answer after the retries (connection refused, reset, timeout)
    ├── ProtocolError           an answer that breaks the contract (bad Content-Range, not JSON)
    ├── IntegrityError          a download's size or sha256 is not the recording's
    └── HTTPStatusError         the server refused; ``status``, ``message`` and ``body`` say why
        ├── BadRequest          400, 413, 415, 422: fix the request
        ├── AuthFailed          401: the token or key is missing, wrong or expired
        ├── Forbidden           403: valid credentials without the right to do this
        │   └── Expired         403 ``url_expired``: ask for a fresh URL (download does)
        ├── NotFound            404: unknown, or another tenant's
        │   └── NotReady        404 with ``Retry-After``: still processing, ask again later
        ├── Conflict            409: the session is ended, deleted or held
        ├── Gone                410: past retention or deleted (``reason``, ``at``, ``policy``);
        │                       final, never retried
        └── ServerError         5xx after the retries
            └── Unavailable     503: a dependency (the access log) failed; it recovers by itself

This module imports nothing of the server (the client can ship alone).
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Root of every error the tapevault client raises."""


class TransportError(ClientError):
    """The server could not be reached, or the connection broke, on every attempt."""


class ProtocolError(ClientError):
    """The server answered something the protocol does not allow."""


class IntegrityError(ClientError):
    """A downloaded file is not the recording: wrong size or sha256. The partial file is
    removed, so the next attempt starts afresh."""


class HTTPStatusError(ClientError):
    """The server answered with an error status."""

    def __init__(
        self, status: int, message: str, body: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body
        self.retry_after = retry_after  # the server's Retry-After, in seconds


class BadRequest(HTTPStatusError):
    """400, 413, 415 or 422: the request is malformed or too large."""


class AuthFailed(HTTPStatusError):
    """401: credentials missing, malformed, wrongly signed or expired."""


class Forbidden(HTTPStatusError):
    """403: not allowed with these credentials (or a signed URL that is invalid)."""


class Expired(Forbidden):
    """403 ``url_expired``: the signed URL's time is over; a fresh one works."""


class NotFound(HTTPStatusError):
    """404: nothing of that id for this caller."""


class NotReady(NotFound):
    """404 with ``Retry-After``: the recording is still arriving or being processed."""


class Conflict(HTTPStatusError):
    """409: the request does not fit the resource's state."""


class Gone(HTTPStatusError):
    """410: past retention or deleted. Final: retrying never helps."""

    def __init__(
        self, status: int, message: str, body: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(status, message, body, retry_after)
        detail = body if isinstance(body, dict) else {}
        self.reason: str | None = detail.get("reason")
        self.at: int | None = detail.get("at")
        self.policy: str | None = detail.get("policy")


class ServerError(HTTPStatusError):
    """5xx, still failing after the retries."""


class Unavailable(ServerError):
    """503: the server cannot do this now (its access log is failing, or recording is off)."""
