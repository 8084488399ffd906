"""Request duration by route template, as a raw ASGI wrapper around the whole application.

Raw ASGI and not ``BaseHTTPMiddleware`` (which costs ~4x the throughput of a small endpoint, see
shared/notes/performance.md): per request it makes one ``send`` closure (a plain function, not a
coroutine), reads the status from the response start, and observes one histogram child found in
a dict (``labels()`` takes a lock and builds tuples). The route label is a template, never the
path, so an attacker sending random paths adds no series: a path no route matched is
``unmatched``. Starlette's router leaves the matched route in ``scope["route"]``; the paths the
application answers before the router (the recording-URL fast path, ``/media/``) are named here.
"""

from __future__ import annotations

from collections.abc import Awaitable
from time import perf_counter
from typing import Any

from tapevault.http.asgi import ASGIApp, Message, Receive, Scope, Send
from tapevault.http.media import AUDIO, DOCUMENT, PEAKS
from tapevault.http.media import PREFIX as MEDIA_PREFIX
from tapevault.observe.metrics import METHODS, OTHER_METHOD, UNMATCHED_ROUTE
from tapevault.observe.metrics import http_request_duration as _duration

MEDIA_AUDIO = "/media/{recording_id}.wav"
MEDIA_PEAKS = "/media/{recording_id}.peaks.json"
MEDIA_DOCUMENT = "/media/{session_id}.json"

_children: dict[tuple[str, str, int], Any] = {}


def media_route(path: str) -> str:
    if path.endswith(PEAKS):
        return MEDIA_PEAKS
    if path.endswith(DOCUMENT):
        return MEDIA_DOCUMENT
    if path.endswith(AUDIO):
        return MEDIA_AUDIO
    return UNMATCHED_ROUTE


def path_route(path: str, fast_path: str, fast_prefix: str, fast_suffix: str) -> str:
    """The template of a path the application answers before its router (or ``unmatched``)."""
    if path.startswith(MEDIA_PREFIX):
        return media_route(path)
    if path.startswith(fast_prefix) and path.endswith(fast_suffix):
        return fast_path
    return UNMATCHED_ROUTE


def child_for(method: str, route: str, status: int) -> Any:
    """The histogram child of (method, route, status), made once: bounded, because methods
    outside the known ones share ``_OTHER`` (and are not cached under their own name), routes
    are templates and statuses three digits."""
    key = (method, route, status)
    child = _children.get(key)
    if child is None:
        known = method in METHODS
        child = _duration.labels(method if known else OTHER_METHOD, route, str(status))
        if known:
            _children[key] = child
    return child


def instrumented(app: ASGIApp, fast_path: str) -> ASGIApp:
    """``app`` with every HTTP request's duration observed; ``fast_path`` is the template of
    the route the application finds before its router."""
    prefix, _, suffix = fast_path.partition("{session_id}")

    async def timed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = perf_counter()
        status = 0

        # Not a coroutine: it hands back the server's own awaitable, so a message costs one
        # plain call more, not a coroutine frame more.
        def send_observed(message: Message) -> Awaitable[None]:
            nonlocal status
            if not status:  # the first message is always http.response.start (ASGI)
                status = message["status"]
            return send(message)

        try:
            await app(scope, receive, send_observed)
        except Exception:
            # The server answers 500 if nothing was sent yet; if something was, the status
            # that went out stands. (A cancelled request, its client gone, counts as nothing.)
            status = status or 500
            raise
        finally:
            if status:  # a client that left before any answer has no status to count
                route = scope.get("route")
                template = (
                    route.path
                    if route is not None
                    else path_route(scope["path"], fast_path, prefix, suffix)
                )
                child_for(scope["method"], template, status).observe(perf_counter() - start)

    return timed
