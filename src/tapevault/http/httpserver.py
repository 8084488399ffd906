"""uvicorn's httptools protocol, with the limits it lacks: header size and read timeouts.

``tapevault serve`` passes ``http=GuardedHttpProtocol`` to uvicorn (an import string, so worker
processes import it themselves). uvicorn's own protocol buffers a request head of any size (a
16 MiB header was answered 200; 40 connections of 8 MiB unfinished headers cost 320 MB) and
never times out a connection that is silent before or during a request; only an idle keep-alive
connection is closed, ``timeout_keep_alive`` seconds after its last answer. This class adds:

- head size: the bytes of a request line and its headers are counted as they arrive; past
  ``max_header_bytes`` the request is answered 431 and the connection closed, before the rest is
  read (the count may run one socket read over, never more);
- head timeout: a request head (or a new connection's first request) not complete within
  ``header_timeout`` seconds of its first byte (of the connection's start) is answered 408 and
  closed; a connection that sent nothing at all is just closed;
- body timeout: a request body from which no byte arrives for ``body_timeout`` seconds while
  the server is ready to read is answered 408 and closed; the application receives
  ``http.disconnect``, so an upload's partial spool file is removed as for any client that left.
  Time the server itself is not reading (the application has not taken the last chunk yet) does
  not count;
- write stall: a client that stops reading its answer (the transport asked us to stop writing)
  and reads nothing more for ``body_timeout`` seconds is dropped; uvicorn would hold the
  connection, and the task writing to it, for as long as the peer keeps its socket open.

And one for speed: a response's head is held until its body's first chunk (or the end of the
loop iteration, whichever comes first) and both leave in one write (:class:`_HeadWithBody`).
uvicorn writes the head as soon as the application sends ``http.response.start``: two sends and
two TCP segments per response where one does (64 KiB seeks: BENCHMARKS.md).

A refusal is written only when no answer is under way on the connection (else it just closes),
and a connection we close is dropped ``CLOSE_TIMEOUT`` later even if the peer never reads.
The limits come from the lifespan state (``tapevault.http.limits.LIMITS_STATE``). This leans on
uvicorn internals (``cycle``, ``flow``, the parser callbacks); pinned in requirements.lock and
exercised by ``tests/test_connection_limits.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from tapevault.http.limits import CLOSE_TIMEOUT, LIMITS_STATE, ConnectionLimits

# Reading a request head, its body, between requests; or handed over to a WebSocket protocol.
_HEAD, _BODY, _DONE, _UPGRADED = 0, 1, 2, 3
# A body chunk up to this size is copied behind its head (one send); a larger one is not worth
# the copy (its own send costs less than copying it).
_JOIN_LIMIT = 256 * 1024


class _HeadWithBody:
    """The transport as one response's cycle sees it: its first write (the head) is held until
    the second (the body's first chunk, usually sent in the same loop step) and both go out in
    one write. (``writelines`` measured slower under uvloop than one joined write.) Held at most
    until the end of the current loop iteration, and flushed before anything that could
    overtake it: a close, the end of the response, a refusal."""

    __slots__ = ("_handle", "_held", "_loop", "_transport", "_writes")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._handle: asyncio.Handle | None = None
        self._writes = 0

    def write(self, data: bytes) -> None:
        self._writes += 1
        if self._writes == 1:
            self._held = data
            self._handle = self._loop.call_soon(self.flush)
            return
        if self._held is None:
            self._transport.write(data)
            return
        if len(data) > _JOIN_LIMIT:
            self.flush()
            self._transport.write(data)
            return
        held, self._held = self._held, None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._transport.write(held + data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if held is not None:
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header-size and read-timeout limits."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = app_state.get(LIMITS_STATE)
        self.limits = limits if isinstance(limits, ConnectionLimits) else ConnectionLimits()
        self.phase = _HEAD
        self.head_bytes = 0
        self.last_read = 0.0
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        self.abort_timer: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.head_timer, self.body_timer, self.write_timer, self.abort_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = self.write_timer = self.abort_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused or self.phase == _UPGRADED:
            return
        if self.phase == _DONE:
            self.phase, self.head_bytes = _HEAD, 0
        if self.phase == _HEAD:
            if self.head_timer is None:  # the first byte of a request on a kept-alive connection
                self.head_timer = self.loop.call_later(
                    self.limits.header_timeout, self._head_expired
                )
            room = self.limits.max_header_bytes - self.head_bytes
            if len(data) > room:
                self._feed_head(data, room)
                return
            self.head_bytes += len(data)
        else:
            self.last_read = self.loop.time()
        super().data_received(data)
        if self.phase == _BODY and self.body_timer is None:
            self.body_timer = self.loop.call_later(self.limits.body_timeout, self._body_check)

    def _feed_head(self, data: bytes, room: int) -> None:
        """Feed no more than the limit allows; if the head is still not complete, refuse it."""
        if room > 0:
            self.head_bytes += room
            super().data_received(data[:room])
        if self.refused or self.transport.is_closing():
            return
        if self.phase == _HEAD:
            self._refuse(
                431,
                f"request header fields over {self.limits.max_header_bytes} bytes",
            )
            return
        if self.phase == _UPGRADED:
            return  # now a WebSocket's; uvicorn too drops bytes sent before its 101
        self.data_received(data[room:])

    # -- parser callbacks ----------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        upgrade = self.parser.should_upgrade() and self._should_upgrade()
        self.phase = _UPGRADED if upgrade else _BODY
        self.last_read = self.loop.time()
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().on_headers_complete()
        cycle: Any = self.cycle
        if not upgrade and cycle is not None and cycle.transport is self.transport:
            cycle.transport = _HeadWithBody(self.transport, self.loop)

    def on_response_complete(self) -> None:
        # A HEAD (or a 304) ends with its head still held: out before anything else happens.
        self._flush_head()
        super().on_response_complete()

    def _flush_head(self) -> None:
        cycle: Any = self.cycle
        if cycle is not None and isinstance(cycle.transport, _HeadWithBody):
            cycle.transport.flush()

    def on_message_complete(self) -> None:
        self.phase = _DONE
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        super().on_message_complete()

    # -- timeouts ------------------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.write_timer is None:
            self.write_timer = self.loop.call_later(self.limits.body_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None

    def _write_stalled(self) -> None:
        self.write_timer = None
        if self.flow.write_paused and not self.transport.is_closing():
            self.logger.debug("client stopped reading its answer; dropping the connection")
            self.transport.abort()

    def _head_expired(self) -> None:
        self.head_timer = None
        if self.phase != _HEAD or self.refused:
            return
        if self.head_bytes == 0:
            self._hang_up()  # nothing was asked: an idle connection, closed without a word
            return
        self._refuse(408, "request header not received in time")

    def _body_check(self) -> None:
        self.body_timer = None
        if self.phase != _BODY or self.refused or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:
            # We are not reading (the application has yet to take what came): not the
            # client's silence. Look again soon.
            self.last_read = now
            self.body_timer = self.loop.call_later(1.0, self._body_check)
            return
        silent = now - self.last_read
        if silent < self.limits.body_timeout:
            self.body_timer = self.loop.call_later(
                self.limits.body_timeout - silent, self._body_check
            )
            return
        self._refuse(408, "request body stalled")

    # -- refusing ------------------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` (unless an answer was or is being sent: then only the close),
        tell the application the client is gone, and close the connection."""
        self.refused = True
        self._flush_head()
        self.logger.debug("%d: %s", status, message)
        cycle = self.cycle
        if self.phase == _HEAD:  # no answer yet to this request; the last one may be under way
            answering = cycle is not None and not cycle.response_complete
        else:  # the body's request: answered already (say, 401 before its body), or under way
            answering = cycle is not None and cycle.response_started
        if not answering:
            body = message.encode("ascii") + b"\n"
            content = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend(
                [
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"cache-control: no-store\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
            self.transport.write(b"".join(content))
        if cycle is not None and not cycle.response_complete:
            # The application sees http.disconnect and answers nobody (its writes are dropped).
            cycle.disconnected = True
            cycle.message_event.set()
        if not answering and self.transport.can_write_eof():
            # A lingering close, as nginx does: closing with the request's bytes unread would
            # reset the connection and could destroy the answer before the client reads it. So
            # end our side, discard what still comes, and let the client close (or time out).
            self.transport.write_eof()
            self.flow.resume_reading()
            self._abort_later()
            return
        self._hang_up()

    def eof_received(self) -> None:
        if self.refused:
            self.transport.close()  # the client read our refusal and left

    def _hang_up(self) -> None:
        self.transport.close()
        self._abort_later()

    def _abort_later(self) -> None:
        if self.abort_timer is None:
            self.abort_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.abort)
