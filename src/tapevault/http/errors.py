"""Tapevault errors as ``{"code": <status>, "message": "..."}`` answers (the Suki error shape).

The Suki dialect and the tus endpoint both answer in this shape; this is where the error tree
(``tapevault.errors``) meets HTTP status codes for them. Protocol-specific leaves (tus's 412, 423)
are mapped by their endpoint before falling back to this.
"""

from __future__ import annotations

from typing import Any

from tapevault.errors import (
    AuthError,
    Conflict,
    Forbidden,
    Gone,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    NotReady,
    PayloadTooLarge,
    TapevaultError,
    Unavailable,
    UnsupportedMediaType,
)

INTERNAL_ERROR = "An internal error occurred."
Headers = list[tuple[bytes, bytes]]


def code_message_error(exc: BaseException) -> tuple[int, dict[str, Any], Headers]:
    """(status, body, extra headers) for any exception; unknown ones are an opaque 500."""
    headers: Headers = []
    match exc:
        case MethodNotAllowed(allowed=allowed):
            status = 405
            headers.append((b"allow", ", ".join(allowed).encode()))
        case AuthError():
            status = 401
        case Forbidden():
            status = 403
        case PayloadTooLarge():
            status = 413
        case UnsupportedMediaType():
            status = 415
        case InvalidRequest():
            status = 400
        case NotReady(retry_after=int() as retry):
            status = 404
            headers.append((b"retry-after", str(retry).encode()))
        case NotFound():
            status = 404
        case Conflict():
            status = 409
        case Unavailable():
            status = 503
        case Gone(detail=detail):
            body = {
                "code": 410,
                "message": exc.message,
                "reason": detail.reason,
                "at": detail.at,
                "policy": detail.policy,
            }
            return 410, body, headers
        case TapevaultError():
            return 500, {"code": 500, "message": INTERNAL_ERROR}, headers
        case _:
            return 500, {"code": 500, "message": INTERNAL_ERROR}, headers
    assert isinstance(exc, TapevaultError)
    return status, {"code": status, "message": exc.message}, headers
