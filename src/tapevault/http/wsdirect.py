"""The live-stream fast path: after the WebSocket handshake, bytes go straight to the file.

Through ASGI every 640-byte audio frame became a message dict in an ``asyncio.Queue``, a task
wake-up of the endpoint's ``receive`` loop, a ``pause_reading``/``resume_reading`` pair
(two ``epoll_ctl`` calls) and a walk down the router's await chain: together more than the rest
of the server's work per frame (BENCHMARKS.md, "What bounds ingest"). ``DirectStream`` is the
connection's ``asyncio.Protocol`` once the handshake is done (``tapevault.http.wsserver``
hands it over): each socket read is parsed in place (``FrameReader``) and every whole binary
message is checked and appended to the stream's ``DurableStream`` in the same callback. No task
runs per message; one coroutine per connection admits it, then sleeps until the stream ends.

Acks are written by the group committer right after its sync (``ack``), and by the stream's
copier when more of it reached the object store (``copied``), inline, unless the transport has
asked us to stop writing (the client is not reading): then only the newest counts are kept and
written when it drains (``resume_writing``), so a slow reader costs nothing and holds up no one.
The final ack always goes out before the close frame.

The contract is the ASGI endpoint's (``tapevault.http.stream``), which stays in place for
every other server and as the fallback: the same admission and close codes (4400 partial
frame or bad parameters, 4401, 4404, 4409, 4410 taken over, 1011 storage failure, 1000 after
``end``), the same order at the end (sync, final ack, recording closed, then the close frame).
RFC 6455 violations close the connection with 1002/1007/1009 and end the stream like a
disconnect, as uvicorn does.

A peer that floods pings, or sends them without reading the pongs, is closed with 1008
(``tapevault.http.limits.PingGuard``): pongs never pile up in the write buffer. A connection we
close is dropped ``CLOSE_TIMEOUT`` later even if the peer never reads our close frame. When the
connection is lost, the frame reader's buffers and every callback are dropped at once: they
form reference cycles with this object, which after ``gc.freeze()`` would hold an incomplete
16 MiB frame until a rare full collection.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import cast

from tapevault.errors import AuthError, Conflict, InvalidRequest, NotFound, QuotaExceeded
from tapevault.http.limits import CLOSE_TIMEOUT, PingGuard
from tapevault.http.requestlog import LoggedRequest
from tapevault.http.stream import (
    StreamEndpoint,
    close_code,
    failure_close,
    is_end,
    partial_frame_reason,
    peer_address,
)
from tapevault.http.wording import say
from tapevault.http.wsframe import (
    CLOSE,
    NO_STATUS,
    PING,
    PONG,
    TEXT,
    FrameReader,
    ProtocolViolation,
    close_frame,
    parse_close,
    server_frame,
)
from tapevault.ingest.durable import BACKLOG_BYTES, AckSink, DurableStream

log = logging.getLogger("tapevault.stream")

_ADMITTING, _OPEN, _ENDING = 0, 1, 2


def ack_frame(upto: int, stored: int) -> bytes:
    return server_frame(TEXT, b'{"type":"ack","bytes":%d,"stored":%d}' % (upto, stored))


class DirectStream(asyncio.Protocol, AckSink):
    """One live stream's connection after its handshake; see the module docstring."""

    def __init__(
        self,
        endpoint: StreamEndpoint,
        session_id: str,
        params: dict[str, str],
        headers: dict[str, str],
        *,
        max_size: int,
        ping_interval: float | None,
        ping_timeout: float | None,
        on_task: Callable[[asyncio.Task[None]], None],
        on_lost: Callable[[DirectStream], None],
        request: LoggedRequest | None = None,
    ) -> None:
        self.endpoint = endpoint
        # Who asked (the id answered in the handshake, the resolved client), for the access
        # records and the one request-log line written when the stream ends.
        self.request = request or LoggedRequest(scope={"method": "GET", "headers": []})
        self.session_id = session_id
        self.params = params
        self.headers = headers
        self.loop = asyncio.get_running_loop()
        self.reader = FrameReader(max_size, self._binary, self._text, self._control)
        self.transport: asyncio.Transport | None = None
        self.stream: DurableStream | None = None
        self.dirty: Callable[[], None] = _nothing  # the committer's, once the stream is open
        self.frame_bytes = 0
        self.state = _ADMITTING
        self.outcome: tuple[int, str] | None = None  # (close code, reason); 0: send none
        self.ended = self.loop.create_future()
        self.disconnected = False
        self.broken = False  # the peer broke the protocol: read nothing more
        self.close_sent = False
        self.sent_close = 0  # the code of the close frame we sent after the stream ended
        self.peer_close = 0  # the code of the client's close frame, when it left first
        self.writable = True
        self.throttled = False  # reading paused until the next batch takes the backlog
        self.acked = 0
        self.acked_stored = 0  # the store-durable count of the last ack sent
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.ping_timer: asyncio.TimerHandle | None = None  # the next ping or the pong deadline
        self.pong_due: bytes | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.ping_guard = PingGuard(self.loop.time())
        self.on_task = on_task
        self.on_lost = on_lost

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        # Nothing is read until the stream is admitted and its file open; the client's frames
        # wait in the socket meanwhile (milliseconds).
        self.transport.pause_reading()
        self.on_task(self.loop.create_task(self._run()))
        self._schedule_ping()

    def data_received(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.reader.feed(data)
        except ProtocolViolation as exc:
            self._fail_connection(exc.code, exc.reason)
        except Exception:  # a bug must not leave the stream open and the peer waiting
            log.exception("live stream input failed")
            self._fail_connection(1011, "internal error")

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        self.writable = True
        self._stop_pings()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        self._end(0, "")
        self.on_lost(self)
        # Break the cycles through the reader's callbacks and ours (see the module docstring);
        # ``_run`` still finishes the stream, which needs none of them.
        self.reader.close()
        self.broken = True
        self.transport = None
        self.on_lost = self.on_task = _ignore

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._catch_up()

    def shutdown(self) -> None:
        """The server is stopping: end the stream as if asked (sync, final ack), code 1012."""
        if self.close_sent or self.disconnected:
            if self.transport is not None:
                self.transport.close()
            return
        self._end(1012, "server shutting down")

    # -- AckSink (called by the group committer) -------------------------------------------------

    def ack(self, upto: int) -> None:
        if self.throttled:  # the batch took this stream's backlog: read on
            self.throttled = False
            if self.state == _OPEN and self.transport is not None:
                self.transport.resume_reading()
        if self.writable:
            self._send_ack(upto)

    def copied(self, stored: int) -> None:
        self.stored = stored
        if self.writable:
            self._catch_up()

    def fail(self, error: OSError) -> None:
        # Stop reading at once; ``_serve`` words the close once ``end`` returns the error
        # (1011 for a failed write or sync, 4410 for a stream taken over).
        self._end(1011, "storage failure")

    async def settle(self) -> None:
        self._catch_up()  # the final ack, even to a client that lags

    def _catch_up(self) -> None:
        """An ack with the latest counts, unless the last one sent had them."""
        stream = self.stream
        if stream is not None and (stream.synced > self.acked or self.stored > self.acked_stored):
            self._send_ack(stream.synced)

    def _send_ack(self, upto: int) -> None:
        if self.close_sent or self.disconnected or self.transport is None:
            return
        frame = ack_frame(upto, self.stored)
        self.transport.write(frame)
        self.request.sent += len(frame)
        self.acked, self.acked_stored = upto, self.stored

    # -- frames (FrameReader callbacks) ----------------------------------------------------------

    def _binary(self, payload: bytes) -> None:
        if self.state != _OPEN:
            return  # ending: later audio is not stored (as through ASGI)
        stream = self.stream
        assert stream is not None
        if len(payload) % self.frame_bytes:
            self._end(4400, partial_frame_reason(len(payload), self.frame_bytes))
            return
        try:
            backlog = stream.append(payload)
        except OSError as exc:
            self._end(1011, f"storage failure: {exc.strerror}")
            return
        self.dirty()
        if backlog >= BACKLOG_BYTES and not self.throttled:
            # Far ahead of real time: let TCP hold the rest until the next batch (``ack``).
            self.throttled = True
            assert self.transport is not None
            self.transport.pause_reading()

    def _text(self, text: str) -> None:
        self.request.received += len(text)
        if self.state == _OPEN and is_end(text):
            self._end(1000, "stream complete")

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            if self.close_sent:
                return
            assert self.transport is not None
            refusal = self.ping_guard.refusal(
                self.loop.time(), self.transport.get_write_buffer_size()
            )
            if refusal is None:
                self._write(server_frame(PONG, payload))
            else:
                self._fail_connection(1008, refusal)
        elif opcode == PONG:
            if self.pong_due is not None and payload == self.pong_due:
                self._stop_pings()
                self._schedule_ping()
        elif opcode == CLOSE:
            if not self.close_sent:
                # The client is leaving: echo its close (RFC 6455 §5.5.1) and treat it as a
                # disconnect, like uvicorn: no final ack, the unacknowledged tail may be lost.
                code, _ = parse_close(payload)
                self.peer_close = code
                self._write(
                    close_frame(code, "") if code != NO_STATUS else server_frame(CLOSE, b"")
                )
                self.close_sent = True
            self._end(0, "")
            assert self.transport is not None
            self.transport.close()

    # -- the stream's life -----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._serve()
        except Exception:  # as uvicorn does for an ASGI app that raises
            log.exception("live stream failed")
            self._close(1011, "internal error")
        finally:
            code = self.outcome[0] if self.outcome else None
            close = self.sent_close or code or self.peer_close
            self.request.done(101, close=close or (1006 if self.disconnected else None))

    async def _serve(self) -> None:
        endpoint = self.endpoint
        try:
            recording, self.frame_bytes = await endpoint.open(
                self.session_id,
                self.params,
                self.headers,
                endpoint.client_address(peer_address(self.transport), self.headers),
                request=self.request.request_id,
            )
        except (InvalidRequest, AuthError, NotFound, Conflict, QuotaExceeded) as exc:
            self._close(close_code(exc), say(exc))
            return
        except Exception:
            log.exception("could not open a stream")
            self._close(1011, "internal error")
            return
        self.request.tenant(recording.partner_id)
        self.stream = stream = endpoint.start(recording, self)
        self.dirty = endpoint.committer.dirty
        try:
            if self.outcome is None:  # not disconnected or shut down while being admitted
                self.state = _OPEN
                assert self.transport is not None
                self.transport.resume_reading()
                await self.ended
        finally:
            code, reason = self.outcome or (0, "")
            self.state = _ENDING
            error = await endpoint.end(stream, recording)
            self.request.received += stream.received  # the audio; text messages counted below
            self.stream = None  # it refers to us (its ack sink): no cycle to outlive the stream
            if error is not None:
                code, reason = failure_close(error, stream.synced) if code else (0, "")
        if code:
            self._close(code, reason)

    def _end(self, code: int, reason: str) -> None:
        """Stop taking audio; ``_run`` finishes the stream and then closes with ``code``."""
        if self.outcome is None:
            self.outcome = (code, reason)
        if self.state == _OPEN:
            self.state = _ENDING
        if not self.ended.done():
            self.ended.set_result(None)

    def _close(self, code: int, reason: str) -> None:
        """Send our close frame and give the peer ``CLOSE_TIMEOUT`` to answer it."""
        if self.close_sent or self.disconnected or self.transport is None:
            return
        self._write(close_frame(code, reason))
        self.close_sent = True
        self.sent_close = code
        self.transport.resume_reading()  # to see the peer's close
        self._stop_pings()
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._hang_up)

    def _fail_connection(self, code: int, reason: str) -> None:
        """The peer broke the protocol: close at once (RFC 6455 §7.1.7), end as a disconnect."""
        self.broken = True
        self._end(0, "")
        if not self.close_sent:
            self._write(close_frame(code, reason))
            self.close_sent = True
        self._stop_pings()
        if self.close_timer is not None:
            self.close_timer.cancel()
        # End our side but read on, discarding (``broken``): closing with the peer's bytes
        # unread would reset the connection and could destroy our close frame unread.
        transport = self.transport
        assert transport is not None
        if not transport.can_write_eof():
            self._hang_up()
            return
        transport.write_eof()
        transport.resume_reading()
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, transport.abort)

    def _hang_up(self) -> None:
        """Close, and drop the connection ``CLOSE_TIMEOUT`` later if the peer never reads
        what is left to send (closing waits for the write buffer to drain)."""
        transport = self.transport
        if transport is None:
            return
        transport.close()
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, transport.abort)

    def _write(self, data: bytes) -> None:
        if not self.disconnected and self.transport is not None:
            self.transport.write(data)

    # -- keepalive (uvicorn's ws_ping_interval / ws_ping_timeout) --------------------------------

    def _schedule_ping(self) -> None:
        if self.ping_interval and not self.close_sent and not self.disconnected:
            self.ping_timer = self.loop.call_later(self.ping_interval, self._ping)

    def _ping(self) -> None:
        self.ping_timer = None
        if self.close_sent or self.disconnected:
            return
        self.pong_due = os.urandom(4)
        self._write(server_frame(PING, self.pong_due))
        if self.ping_timeout:
            self.ping_timer = self.loop.call_later(self.ping_timeout, self._no_pong)
        else:
            self._schedule_ping()

    def _no_pong(self) -> None:
        self.ping_timer = None
        self._fail_connection(1011, "keepalive ping timeout")

    def _stop_pings(self) -> None:
        self.pong_due = None
        if self.ping_timer is not None:
            self.ping_timer.cancel()
            self.ping_timer = None


def _nothing() -> None:
    pass


def _ignore(_: object) -> None:
    pass
