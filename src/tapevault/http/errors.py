"""Where the error tree (``tapevault.errors``) meets HTTP status codes: ``status_of``.

Also the ``{"code": <status>, "message": "..."}`` answer (the Suki error shape), which the Suki
dialect, the tus endpoint and the admin API use; the Amigo dialect words the same statuses its
own way. Protocol-specific leaves (tus's 412, 423) are mapped by their endpoint before falling
back to this.
"""

from __future__ import annotations

from typing import Any

from tapevault.errors import (
    AuthError,
    Conflict,
    Forbidden,
    Gone,
    InsufficientStorage,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    NotReady,
    PayloadTooLarge,
    TapevaultError,
    Unavailable,
    UnsupportedMediaType,
)
from tapevault.http.wording import say

INTERNAL_ERROR = "An internal error occurred."
Headers = list[tuple[bytes, bytes]]


def status_of(exc: BaseException) -> tuple[int, Headers]:
    """The HTTP status of any exception, with the headers its leaf calls for (``Allow``,
    ``Retry-After``); anything unknown is a 500. Every dialect starts from this table and
    words the body its own way."""
    match exc:
        case MethodNotAllowed(allowed=allowed):
            return 405, [(b"allow", ", ".join(allowed).encode())]
        case AuthError():
            return 401, []
        case Forbidden():
            return 403, []
        case PayloadTooLarge():
            return 413, []
        case UnsupportedMediaType():
            return 415, []
        case InvalidRequest():
            return 400, []
        case NotReady(retry_after=int() as retry):
            return 404, [(b"retry-after", str(retry).encode())]
        case NotFound():
            return 404, []
        case Conflict():
            return 409, []
        case Unavailable():
            return 503, []
        case InsufficientStorage(retry_after=int() as retry):
            return 507, [(b"retry-after", str(retry).encode())]
        case InsufficientStorage():
            return 507, []
        case Gone():
            return 410, []
        case _:
            return 500, []


def code_message_error(exc: BaseException) -> tuple[int, dict[str, Any], Headers]:
    """(status, body, extra headers) for any exception; unknown ones are an opaque 500."""
    status, headers = status_of(exc)
    if status == 500 or not isinstance(exc, TapevaultError):
        return 500, {"code": 500, "message": INTERNAL_ERROR}, headers
    body: dict[str, Any] = {"code": status, "message": say(exc)}
    if isinstance(exc, Gone):
        detail = exc.detail
        body.update(reason=detail.reason, at=detail.at, policy=detail.policy)
    return status, body, headers
