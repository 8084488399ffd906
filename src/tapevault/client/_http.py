"""What the sync and async clients share about HTTP: when to retry and how long to wait, and how
an error answer becomes a leaf of the error tree. No I/O here."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from tapevault.client.errors import (
    AuthFailed,
    BadRequest,
    Conflict,
    Expired,
    Forbidden,
    Gone,
    HTTPStatusError,
    NotFound,
    NotReady,
    ServerError,
    Unavailable,
)

# A server's Retry-After is honoured up to this; past it, the caller's own deadline decides.
MAX_RETRY_AFTER = 60.0
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Retry:
    """Bounded retries with exponential backoff and full jitter (AWS's "full jitter": a random
    wait in [0, min(cap, base * 2**n)]), so that many clients failing together do not come back
    together. A ``Retry-After`` from the server replaces the computed wait."""

    attempts: int = 5  # tries in all, the first included
    base: float = 0.5
    cap: float = 20.0

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


def retryable(method: str, response: httpx.Response | None, exc: Exception | None) -> bool:
    """Whether a failed try may be repeated. GET, PUT and DELETE are idempotent: any transport
    error or 5xx/429. A POST (upload, create) may have been done already when the connection
    broke or the server failed, so it is repeated only when it surely was not: the connection
    was never made, or the answer is 503/429 (refused before doing anything)."""
    if exc is not None:
        if method in IDEMPOTENT:
            return isinstance(exc, httpx.TransportError)
        return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    assert response is not None
    if method in IDEMPOTENT:
        return response.status_code in RETRY_STATUSES
    return response.status_code in (429, 503)


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP-date), or None when absent or
    unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _message(body: Any, fallback: str) -> str:
    """The human message of any dialect's error body: Suki's and the gateway's ``message``,
    Amigo's ``detail``, Kore's ``errors[0].msg``."""
    if isinstance(body, dict):
        if isinstance(body.get("message"), str):
            return str(body["message"])
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            return str(detail[0].get("msg", fallback))
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("msg", fallback))
    return fallback


def error_for(response: httpx.Response) -> HTTPStatusError:
    """The error-tree leaf of an error answer (the body must have been read)."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:500]
    message = _message(body, response.reason_phrase or f"HTTP {status}")
    wait = retry_after(response)
    leaf: type[HTTPStatusError] = HTTPStatusError
    if status == 401:
        leaf = AuthFailed
    elif status == 403:
        expired = isinstance(body, dict) and body.get("error") == "url_expired"
        leaf = Expired if expired else Forbidden
    elif status == 404:
        leaf = NotFound if wait is None else NotReady
    elif status == 409:
        leaf = Conflict
    elif status == 410:
        leaf = Gone
    elif status == 503:
        leaf = Unavailable
    elif status >= 500:
        leaf = ServerError
    elif status in (400, 413, 415, 422):
        leaf = BadRequest
    return leaf(status, message, body, wait)
