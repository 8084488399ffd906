"""Let nginx send the bytes: an ``X-Accel-Redirect`` answer for a media GET tapevault validated.

With ``TAPEVAULT_ACCEL_REDIRECT=/_tapevault_files/`` (and the local store) a playback's GET is
authorised, recorded and decided here exactly as when tapevault sends the bytes itself, and then,
instead of the body, answered with an empty 200 that names the file in nginx's internal location
(``deploy/nginx/tapevault.conf``); nginx sends it with sendfile and reports what it sent
(``core/handoff.py``, ``http/deliverylog.py``).

nginx re-reads the client's request headers when it serves the file: its range filter and its
precondition checks see the client's ``Range``, ``If-Range``, ``If-Match``... and compare them
with its own validators. So a request is handed to nginx only when nginx is bound to answer it
exactly as tapevault decided (:func:`handoff_range`); anything else (HEAD, several ranges, a
range written in any but the plain forms, ``If-Match``, ``If-Unmodified-Since``, a date in
``If-Range``, a Range tapevault would ignore, a 304/412/416) is answered by tapevault itself as
before. The site's internal location turns nginx's own ETag and If-Modified-Since handling off
and sends tapevault's ETag and Last-Modified, so ``If-Range`` with an entity-tag is compared
with tapevault's ETag by both.

**Cached authorisations** (``TAPEVAULT_ACCEL_AUTHZ_SECONDS``, the site's seek location): nginx
asks ``auth_request`` once per playback, with the URL of the media GET and ``X-Tapevault-Authz:
1``, and caches the answer for a few seconds (``proxy_cache`` keyed on the URL, the client's
address, user agent and origin). tapevault checks the URL as for a GET, opens (durably) or joins
the playback, leases it (``core/handoff.py``) and answers an empty 200 naming the file, the
lease's id (which nginx's delivery lines then carry), the validators and headers to send, and
``X-Accel-Expires``: an absolute time before both the URL's expiry and the lease's end
(:func:`cached_until`). Any other answer is a 401, which makes nginx hand the request to
tapevault (``error_page``), which then answers it as always: refusals are recorded and worded
there. nginx itself decides which requests may use the cached answer (GET, no preconditions, the
plain Range forms above); everything else goes to tapevault as before.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from tapevault.core.handoff import Handoffs
from tapevault.core.ranges import Satisfiable, parse_range
from tapevault.errors import StorageError
from tapevault.http.asgi import Send
from tapevault.http.conditional import evaluate_preconditions, if_range_allows
from tapevault.http.ranged import Representation, validators

__all__ = [
    "AUTHZ_HEADER",
    "DELIVERY_HEADER",
    "Accel",
    "accel_answer",
    "authz_answer",
    "authz_refusal",
    "cached_until",
    "handoff_range",
]

DELIVERY_HEADER = b"x-tapevault-delivery"  # read by the site's log_format, never sent on
AUTHZ_HEADER = "x-tapevault-authz"  # set by the site's auth_request location (and cleared
# on every other request nginx passes on): the request is nginx asking, not a client
# The forms nginx parses exactly as core/ranges.py does: one range, lower-case unit, no spaces,
# numbers far below nginx's overflow cut-off (it answers 416 to a number that overflows off_t,
# where RFC 9110 and tapevault clamp).
_PLAIN_RANGE = re.compile(r"bytes=(?:\d{1,15}-\d{0,15}|-\d{1,15})")
# nginx tests these against its own validators (the file's mtime, no ETag) before the site's
# add_header replaces them: it would answer 412 where tapevault decided 200 or 206.
_NGINX_PRECONDITIONS = ("if-match", "if-unmodified-since")


@dataclass(frozen=True)
class Accel:
    """What the media paths need to hand a response to nginx (``TAPEVAULT_ACCEL_REDIRECT``)."""

    location: str  # nginx's internal location, '/name/'
    path_for: Callable[[str], str]  # the local store's file of a key
    handoffs: Handoffs
    ready: Callable[[], bool]  # whether nginx's delivery log is being read
    lease_seconds: int = 0  # TAPEVAULT_ACCEL_AUTHZ_SECONDS: how long nginx may cache an answer

    def file_size(self, key: str) -> int | None:
        """The size of the stored file nginx would send, None if it is not there: a missing or
        damaged object is answered by tapevault (as without nginx), never by nginx's 404."""
        try:
            return os.stat(self.path_for(key)).st_size
        except (OSError, ValueError, StorageError):
            return None


def handoff_range(
    method: str, headers: Mapping[str, str], rep: Representation
) -> tuple[int, int] | None:
    """The bytes (first, last) nginx may send for this request, answering 200 (the whole) or 206
    (one range) exactly as tapevault would; None when tapevault must answer itself."""
    if method != "GET" or rep.size <= 0:
        return None
    if any(name in headers for name in _NGINX_PRECONDITIONS):
        return None
    if evaluate_preconditions(method, headers, rep.etag, rep.last_modified) is not None:
        return None  # 304 or 412: tapevault answers
    range_header = headers.get("range")
    if range_header is None:
        return (0, rep.size - 1)  # nginx ignores an If-Range without a Range, as RFC 9110 does
    if not _PLAIN_RANGE.fullmatch(range_header):
        return None
    if_range = headers.get("if-range")
    # Only an entity-tag equal to ours, which nginx compares with the ETag the site gives it; a
    # date (parsed by two different parsers) or a mismatch (a 200 with a Range present) is
    # answered by tapevault.
    if if_range is not None and not (
        if_range.startswith('"') and if_range_allows(if_range, rep.etag, rep.last_modified)
    ):
        return None
    decision = parse_range(range_header, rep.size, max_ranges=1)
    if not isinstance(decision, Satisfiable):
        return None  # 416 (or a header tapevault ignores): tapevault answers
    (only,) = decision.ranges
    return (only.start, only.end)


async def accel_answer(
    send: Send,
    *,
    location: str,
    key: str,
    delivery_id: str,
    rep: Representation,
    extra_headers: list[tuple[bytes, bytes]],
) -> None:
    """The empty answer that makes nginx serve ``key`` from the internal ``location``.

    nginx keeps Content-Type, Cache-Control and Content-Disposition of it; the site's internal
    location sends ETag, Last-Modified, the CORS headers and X-Request-Id on with add_header."""
    headers = [
        (b"x-accel-redirect", (location + quote(key, safe="/")).encode("ascii")),
        (DELIVERY_HEADER, delivery_id.encode("ascii")),
        (b"content-type", rep.content_type.encode("latin-1")),
        (b"cache-control", b"private, no-store"),
        *validators(rep),
        (b"content-length", b"0"),
        *extra_headers,
    ]
    await _empty(send, 200, headers)


def cached_until(now_ms: int, expires_s: int, lease_seconds: int) -> int:
    """The ``X-Accel-Expires: @T`` for an authorisation given at ``now_ms`` for a URL that
    expires at ``expires_s``; 0: nginx must not cache it.

    nginx uses a cached entry while its clock's whole second is at most T, that is until
    T + 1 began; so T + 1 must not pass the lease's end nor the URL's expiry."""
    limit_ms = min(expires_s * 1000, now_ms + lease_seconds * 1000)
    until = limit_ms // 1000 - 1
    return until if until >= now_ms // 1000 else 0


async def authz_answer(
    send: Send,
    *,
    key: str,
    lease_id: str,
    rep: Representation,
    cache_until: int,
    extra_headers: list[tuple[bytes, bytes]],
) -> None:
    """tapevault's yes to nginx's ``auth_request``: the file, the lease, what to send with it."""
    headers = [
        (b"x-tapevault-file", key.encode("ascii")),
        (DELIVERY_HEADER, lease_id.encode("ascii")),
        (b"x-accel-expires", f"@{cache_until}".encode() if cache_until else b"0"),
        *validators(rep),
        (b"content-length", b"0"),
        *extra_headers,
    ]
    await _empty(send, 200, headers)


async def authz_refusal(send: Send) -> None:
    """No to nginx's ``auth_request`` (never cached): nginx hands the request to tapevault,
    which answers it (refused, 304, 416...) as it would without nginx."""
    headers = [(b"content-length", b"0"), (b"x-accel-expires", b"0")]
    await _empty(send, 401, headers)


async def _empty(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    """A response with ``headers`` and no body (every answer to nginx here)."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
