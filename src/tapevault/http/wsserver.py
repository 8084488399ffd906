"""uvicorn's WebSocket protocol, bounded against abusive peers; live streams leave it after the
handshake.

``GuardedWebSocketsProtocol`` is uvicorn's websockets-sansio protocol with three bounds it lacks:
a ping is answered only while the peer reads (and at a sane rate), else the connection is closed
with 1008 (``tapevault.http.limits.PingGuard``); a close the application sends to a peer that
does not read is given ``CLOSE_TIMEOUT`` and then the connection is dropped (uvicorn would wait
for the write buffer to drain, forever); and a closed connection lets go of its parser's buffers
at once (they sit in a reference cycle that only a full garbage collection would free, and
``gc.freeze()`` makes those rare). ``tapevault serve`` uses it when
``TAPEVAULT_DIRECT_STREAMS=off``.

``tapevault serve`` otherwise passes ``ws=DirectStreamsProtocol`` to uvicorn. Every WebSocket
connection starts in uvicorn's own websockets-sansio protocol; when the upgrade request is for
``/api/v1/ambient/session/{id}/stream`` this class answers the handshake itself and hands the
transport to a ``DirectStream`` (``tapevault.http.wsdirect``), which from then on parses frames
and writes audio without ASGI. Everything else (Twilio, any other path) and every case the
fast path does not cover (a failed handshake, a negotiated extension such as
permessage-deflate, a ``root_path``, an application that did not publish its endpoint in the
lifespan state) stays on uvicorn's ASGI path, where ``StreamEndpoint`` serves the same contract.
The endpoint comes from the lifespan state (``STREAMS_STATE``), which uvicorn hands every
protocol it creates, so the class needs no closure and survives being sent to a worker process.

This leans on uvicorn internals (``handle_connect``, ``conn``, ``connections``, ``tasks``);
``tests/test_stream_direct.py`` exercises it against the installed uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

from uvicorn._types import ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.http11 import Request

from tapevault.http.app import STREAMS_STATE
from tapevault.http.asgi import REQUEST_ID, request_id
from tapevault.http.limits import CLOSE_TIMEOUT, PingGuard
from tapevault.http.requestlog import ROUTE, LoggedRequest
from tapevault.http.requestlog import STATE as REQUEST_LOG_STATE
from tapevault.http.stream import StreamEndpoint
from tapevault.http.wsdirect import DirectStream

# Starlette's ``{session_id}`` matches one non-empty path segment of the decoded path.
STREAM_PATH = re.compile(r"/api/v1/ambient/session/([^/]+)/stream")
STREAM_ROUTE = "/api/v1/ambient/session/{session_id}/stream"


class _PathOnly(logging.Filter):
    """uvicorn logs every WebSocket handshake it answers at INFO with the path *and query
    string*: a live stream's ``?ticket=``, a Twilio stream URL's signature. Keep the path."""

    def filter(self, record: logging.LogRecord) -> bool:
        if '"WebSocket %s"' in str(record.msg) and isinstance(record.args, tuple):
            record.args = tuple(
                arg.split("?", 1)[0] if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True


_PATH_ONLY = _PathOnly()


class GuardedWebSocketsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with bounds on pings, closes and buffers, whose
    log lines never carry a query string (``_PathOnly``)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.ping_guard = PingGuard(self.loop.time())
        if _PATH_ONLY not in self.logger.filters:  # after uvicorn configured its logging
            self.logger.addFilter(_PATH_ONLY)

    def handle_ping(self) -> None:
        if self.close_sent or self.transport.is_closing():
            self.conn.data_to_send()  # the pong websockets queued: nobody is listening for it
            return
        refusal = self.ping_guard.refusal(self.loop.time(), self.transport.get_write_buffer_size())
        if refusal is None:
            super().handle_ping()
            return
        self.conn.data_to_send()
        self._abandon(1008, refusal)

    def _abandon(self, code: int, reason: str) -> None:
        """Close on the peer: tell the application, send our close frame and end our side.
        What the peer still sends is discarded (websockets' parser is failed) rather than left
        unread, which would reset the connection and could destroy the close frame before the
        peer reads it; the peer has ``CLOSE_TIMEOUT`` to hang up, then we do."""
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.fail(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.stop_keepalive()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        # uvicorn's close timer: while it is set, the application's end does not close the
        # transport (which, with the peer's bytes unread, would reset the connection).
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.abort)

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "websocket.close" and not self.writable.is_set():
            # uvicorn waits for the peer to read before it closes; a peer that never reads
            # would keep the connection (an unauthenticated one, too) open for good.
            try:
                await asyncio.wait_for(self.writable.wait(), CLOSE_TIMEOUT)
            except TimeoutError:
                self.transport.abort()
                raise ClientDisconnected from None
        await super().send(message)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        release_parser(self)


def release_parser(protocol: WebSocketsSansIOProtocol) -> None:
    """Drop what websockets buffered for a connection that is gone: its parser is a generator
    that refers to its own protocol object, so without this an incomplete 16 MiB frame would
    stay in memory until a full garbage collection."""
    protocol.frames = []
    conn = protocol.conn
    with contextlib.suppress(AttributeError):  # websockets internals; absent is harmless
        conn.reader.buffer.clear()
        conn.parser.close()


class DirectStreamsProtocol(GuardedWebSocketsProtocol):
    """uvicorn's websockets-sansio protocol, handing the stream path's connections to a
    ``DirectStream`` once the handshake is answered."""

    direct: DirectStream | None = None

    def handle_connect(self, event: Request) -> None:
        endpoint = self.app_state.get(STREAMS_STATE)
        raw_path, _, query = event.path.partition("?")
        match = STREAM_PATH.fullmatch(unquote(raw_path))
        if match is None or self.root_path or not isinstance(endpoint, StreamEndpoint):
            super().handle_connect(event)
            return
        response = self.conn.accept(event)
        if response.status_code != 101 or "Sec-WebSocket-Extensions" in response.headers:
            super().handle_connect(event)  # uvicorn answers (or serves) it as usual
            return
        # As uvicorn does on websocket.accept: its default headers, its cached Date.
        del response.headers["Date"]
        response.headers.update(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in self.default_headers
        )
        headers = _headers(event)
        request = LoggedRequest(
            {
                "type": "websocket",
                "method": "GET",
                "headers": [],
                "client": self._client(endpoint, headers),
                ROUTE: STREAM_ROUTE,
                REQUEST_ID: request_id(headers),
            },
            self.app_state.get(REQUEST_LOG_STATE),
        )
        response.headers["X-Request-Id"] = request.request_id
        self.conn.send_response(response)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.handshake_initiated = self.handshake_complete = True
        direct = DirectStream(
            endpoint,
            match.group(1),
            _params(query),
            headers,
            max_size=self.config.ws_max_size,
            ping_interval=self.config.ws_ping_interval,
            ping_timeout=self.config.ws_ping_timeout,
            on_task=self._track,
            on_lost=self._forget,
            request=request,
        )
        # From here on the connection is the stream's: uvicorn's shutdown reaches it
        # through ``connections`` (DirectStream.shutdown) and waits for its task.
        self.connections.discard(self)
        self.connections.add(cast(Any, direct))
        self.direct = direct
        direct.connection_made(self.transport)
        # The HTTP protocol that called us sets this object as the transport's protocol
        # when we return; the stream takes over on the next turn of the loop, and until
        # then (it reads nothing before it is admitted) the methods below pass events on.
        self.loop.call_soon(self.transport.set_protocol, direct)

    def _client(self, endpoint: Any, headers: dict[str, str]) -> tuple[str, int] | None:
        """The peer, or the client a trusted proxy names (``tapevault.http.forwarded``, the
        rule the ASGI path applies too: uvicorn's own proxy headers are off)."""
        peer = self.client
        address = endpoint.client_address(peer[0] if peer else None, headers)
        return (address, 0) if address else peer

    def data_received(self, data: bytes) -> None:
        if self.direct is None:
            super().data_received(data)
        else:
            self.direct.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.direct is None:
            super().connection_lost(exc)
        else:
            self.direct.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.direct is None:
            super().pause_writing()
        else:
            self.direct.pause_writing()

    def resume_writing(self) -> None:
        if self.direct is None:
            super().resume_writing()
        else:
            self.direct.resume_writing()

    def _track(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _forget(self, direct: DirectStream) -> None:
        self.connections.discard(cast(Any, direct))


def _params(query: str) -> dict[str, str]:
    """As ``tapevault.http.asgi.query_params``: the first value of a repeated name wins."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, True):
        params.setdefault(name, value)
    return params


def _headers(event: Request) -> dict[str, str]:
    """As ``tapevault.http.asgi.request_headers``: lower-case names, repeats joined."""
    headers: dict[str, str] = {}
    for name, value in event.headers.raw_items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers
