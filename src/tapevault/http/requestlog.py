"""One JSON line per request, and the ``X-Request-Id`` of every answer.

``logged(app, enabled=...)`` wraps the application once (``build_app``). For every HTTP request
and WebSocket session it settles the request's id (the client's or proxy's ``X-Request-Id`` when
it is 1-128 token characters, else a new one), keeps it in the scope for the access records,
adds it to the response (and to a WebSocket handshake's answer), and when the request is done
writes one line to the ``tapevault.request`` logger::

    {"at_ms":…,"request_id":"…","method":"GET","route":"/media/{recording_id}.wav","status":206,
     "bytes":1048576,"duration_ms":1.83,"tenant":"…","client":"203.0.113.9"}

What a line never holds, by construction: the raw path or query (a media URL's query is its
signature; a path may carry whatever a client typed), any header, and anything the handlers
saw. ``route`` is the matched route's template (``null`` for no route); ``tenant`` is the id of
the tenant whose credential the request carried (``asgi.note_tenant``), absent if none did;
``client`` is the peer as uvicorn resolved it (``X-Forwarded-For`` only from
``TAPEVAULT_TRUSTED_PROXIES``). A WebSocket's line, written when it ends, has status 101 and
the close code (``close``), the message bytes received (``received``) and sent (``bytes``).

Lines are cheap on the event loop and never wait for the output: a line is built with orjson and
appended to a bounded deque; one writer thread per process hands the lines to the logger (whose
handlers do the I/O), whatever queued meanwhile as one record (its message: one line per
request, separated by newlines), so that logging's per-record cost is paid per batch, not per
request (a line goes out at most ``BATCH_SECONDS`` after it was queued). If the output is
slower than the requests for long, lines past ``CAPACITY`` are dropped and counted, and the next
line written says how many (``{"dropped": N}``), so memory stays bounded and the event loop is
never stalled by a slow stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import orjson

from tapevault.http.asgi import (
    REQUEST_ID,
    TENANT,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    note_tenant,
    scope_request_id,
)
from tapevault.http.media import AUDIO, DOCUMENT, PEAKS
from tapevault.http.media import PREFIX as MEDIA_PREFIX

LOGGER = "tapevault.request"
STATE = "tapevault.request_log"  # lifespan state key: how the stream fast path finds the log
ROUTE = "tapevault.route"  # scope key: a route template set by paths the router does not see
CAPACITY = 10_000  # lines waiting for the writer thread at most (a few MB)
_BATCH = 512  # lines handed to the logger in one record at most
BATCH_SECONDS = 0.05  # how long the writer lets lines gather once one is queued

log = logging.getLogger(LOGGER)


class RequestLog:
    """The bounded, non-blocking line sink; see the module docstring."""

    def __init__(self, logger: logging.Logger = log, capacity: int = CAPACITY) -> None:
        self.logger = logger
        self.capacity = capacity
        self.dropped = 0
        self._pending: deque[bytes] = deque()  # JSON lines, decoded by the writer
        self._wake = threading.Event()
        self._closed = False
        self._busy = False  # the writer holds a batch it has not handed over yet
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # starting and stopping the thread, never per line

    @property
    def enabled(self) -> bool:
        """Whether a line would reach any handler (cached by logging: a dict lookup)."""
        return self.logger.isEnabledFor(logging.INFO)

    def write(self, fields: Mapping[str, Any]) -> None:
        """Queue one line; never blocks, never raises for its input (any thread)."""
        if len(self._pending) >= self.capacity or self._closed:
            self.dropped += 1
            return
        try:
            line = orjson.dumps(fields, default=str)
        except TypeError:  # a value orjson refuses (a str subclass with surrogates...): say so
            line = orjson.dumps({"unloggable": sorted(map(str, fields))})
        self._pending.append(line)
        if self._thread is None:
            self._start()
        if not self._wake.is_set():
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="tapevault-request-log", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            # Let a batch gather: under load the loop then never signals (the event stays set)
            # and the thread wakes BATCH_SECONDS apart, not once per request; idle, never.
            if not self._closed:
                time.sleep(BATCH_SECONDS)
            self._wake.clear()
            self.flush()
            if self._closed and not self._pending:
                return

    async def drained(self, within: float = 2.0) -> None:
        """Wait (on the event loop, without blocking it) until the writer handed over every
        queued line, at most ``within`` seconds: the server's shutdown, so that the last
        requests' lines are not lost, and a stuck output cannot hold the process up."""
        if self._thread is None:
            return
        self._wake.set()
        for _ in range(int(within / 0.01)):  # the writer thread has no loop to tell us
            if not (self._pending or self._busy):
                return
            await asyncio.sleep(0.01)

    def flush(self) -> None:
        """Hand every queued line to the logger (the writer thread; ``close``), as many as
        queued meanwhile in one record: a record costs the thread microseconds of the GIL the
        event loop needs, a line in a batch almost nothing."""
        pending = self._pending
        while pending:
            self._busy = True
            batch = [pending.popleft() for _ in range(min(len(pending), _BATCH))]
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                batch.append(orjson.dumps({"dropped": dropped}))
            self._emit(b"\n".join(batch).decode())
            self._busy = False

    def _emit(self, line: str) -> None:
        # A failing handler must not end the writer thread; logging reports its own errors.
        with contextlib.suppress(Exception):
            self.logger.info(line)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and stop the writer (the server's shutdown)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)
        else:
            self.flush()


def to_stderr(logger: logging.Logger = log) -> None:
    """For ``tapevault serve`` (each of its processes): the lines alone on stderr, one JSON
    document per line, whatever the process's log format (unless configured already)."""
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def route_template(scope: Scope) -> str | None:
    """The template of the route that served the request; never its raw path."""
    route = scope.get(ROUTE)
    if route is not None:
        return str(route)
    matched = scope.get("route")
    if matched is not None:
        return str(getattr(matched, "path", None) or "") or None
    path: str = scope.get("path", "")
    if path.startswith(MEDIA_PREFIX):
        if path.endswith(PEAKS):
            return f"{MEDIA_PREFIX}{{recording_id}}{PEAKS}"
        if path.endswith(AUDIO):
            return f"{MEDIA_PREFIX}{{recording_id}}{AUDIO}"
        if path.endswith(DOCUMENT):
            return f"{MEDIA_PREFIX}{{session_id}}{DOCUMENT}"
        return f"{MEDIA_PREFIX}…"
    return None


def line(
    scope: Scope,
    status: int,
    sent: int,
    started: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields of one request's line (``extra``: a WebSocket's close code and counts)."""
    fields: dict[str, Any] = {
        "at_ms": int(time.time() * 1000),
        "request_id": scope.get(REQUEST_ID),
        "method": scope.get("method", "GET"),
        "route": route_template(scope),
        "status": status,
        "bytes": sent,
        "duration_ms": int((time.perf_counter() - started) * 1e6) / 1000,  # round() costs more
    }
    tenant = scope.get(TENANT)
    if tenant is not None:
        fields["tenant"] = tenant
    client = scope.get("client")
    if client:
        fields["client"] = client[0]
    if extra:
        fields.update(extra)
    return fields


class LoggedRequest:
    """A request served outside ASGI (the live-stream fast path, ``http/wsdirect.py``): the same
    scope keys, and the same one line, written by ``done`` once the connection ends."""

    def __init__(self, scope: Scope, sink: RequestLog | None = None) -> None:
        self.scope = scope
        self.sink = sink
        self.started = time.perf_counter()
        self.sent = 0
        self.received = 0
        self._written = False

    @property
    def request_id(self) -> str:
        return scope_request_id(self.scope)

    @property
    def client(self) -> str | None:
        client = self.scope.get("client")
        return str(client[0]) if client else None

    def tenant(self, partner_id: str) -> None:
        note_tenant(self.scope, partner_id)

    def done(self, status: int, **extra: Any) -> None:
        sink = self.sink
        if self._written or sink is None or not sink.enabled:
            return
        self._written = True
        sink.write(
            line(self.scope, status, self.sent, self.started, {**extra, "received": self.received})
        )


_SHARED: RequestLog | None = None
_SHARED_LOCK = threading.Lock()


def shared() -> RequestLog:
    """The process's request log: one writer thread however many applications it builds."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = RequestLog()
        return _SHARED


def logged(app: ASGIApp, *, enabled: bool = True, sink: RequestLog | None = None) -> ASGIApp:
    """``app`` with request ids on every answer and, when ``enabled``, a line per request
    (to ``sink``, by default the process's ``shared()`` log)."""
    requests = sink or shared()

    async def http(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        stamp = (b"x-request-id", scope_request_id(scope).encode("ascii"))
        status = 0
        sent = 0

        async def stamped(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                status = message["status"]
                # A new list: handlers may send one prebuilt header list with every answer.
                message["headers"] = [*message.get("headers", ()), stamp]
            await send(message)

        if not (enabled and requests.enabled):
            await app(scope, receive, stamped)
            return
        try:
            await app(scope, receive, stamped)
        except asyncio.CancelledError:
            requests.write(line(scope, status or 499, sent, started, {"error": "cancelled"}))
            raise
        except BaseException:
            requests.write(line(scope, status or 500, sent, started, {"error": "exception"}))
            raise
        requests.write(line(scope, status, sent, started))

    async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        stamp = (b"x-request-id", scope_request_id(scope).encode("ascii"))
        status = 0
        close: int | None = None
        sent = received = 0

        async def counted_receive() -> Message:
            nonlocal received, close
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                received += len(message.get("bytes") or b"") + len(message.get("text") or "")
            elif kind == "websocket.disconnect" and close is None:
                close = message.get("code", 1005)
            return message

        async def stamped(message: Message) -> None:
            nonlocal status, sent, close
            kind = message["type"]
            if kind == "websocket.send":
                sent += len(message.get("bytes") or b"") + len(message.get("text") or "")
            elif kind in ("websocket.accept", "websocket.http.response.start"):
                status = 101 if kind == "websocket.accept" else message["status"]
                message["headers"] = [*message.get("headers", ()), stamp]
            elif kind == "websocket.close":
                status = status or 403  # closed before the handshake: uvicorn answers 403
                close = message.get("code", 1000) if close is None else close
            await send(message)

        if not (enabled and requests.enabled):
            await app(scope, counted_receive, stamped)
            return
        try:
            await app(scope, counted_receive, stamped)
        finally:
            requests.write(
                line(scope, status or 500, sent, started, {"close": close, "received": received})
            )

    async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})[STATE] = requests if enabled else None

        async def closing(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await requests.drained()  # the last requests' lines, before the process ends
            await send(message)

        await app(scope, receive, closing)

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await http(scope, receive, send)
        elif kind == "websocket":
            await websocket(scope, receive, send)
        elif kind == "lifespan":
            await lifespan(scope, receive, send)
        else:
            await app(scope, receive, send)

    return wrapped
