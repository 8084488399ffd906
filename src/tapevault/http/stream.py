"""Real-time ingest: ``WS /api/v1/ambient/session/{id}/stream``.

Query parameters ``encoding`` (pcm_s16le, pcm_mulaw, pcm_alaw), ``sample_rate`` (8000-48000) and
``channels`` (1 or 2); binary messages carry raw audio, each a whole number of sample frames.
Servers authenticate with the ``sdp_suki_token`` header; browsers, which cannot set WebSocket
headers, first ``POST .../stream-ticket`` with the token and pass ``?ticket=`` (single use, one
minute). Each connection becomes the session's next recording; the server sends
``{"type":"ack","bytes":N,"stored":M}`` once the first N audio bytes of this stream are on this
node's disk, of which the first M are also in the object store (copied every
``TAPEVAULT_STREAM_UPLOAD_INTERVAL``, ``tapevault.ingest.streamcopy``; all N once the stream ended
with 1000). Bytes up to M survive the loss of the node; a client that lost its connection and
cannot tell whether the node survived resumes in a new stream from byte M.

Close codes (the reason text says what was wrong):
    1000  normal end; every byte received was acknowledged
    1011  storage failure (a sync failed); bytes after the last ack may be lost
    4400  bad parameters, or a message that is not a whole number of frames
    4401  missing, invalid or expired token or ticket
    4404  no such session (for this partner)
    4409  the session has ended
    4410  the stream was taken over by recovery on another server (this one's lease on it had
          lapsed); nothing after the last ack was acknowledged. Reconnect to go on recording.
    4507  the partner's storage quota is used up
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import orjson

from tapevault.auth.suki import SukiCaller
from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.clock import now_ms
from tapevault.core.model import Recording, Tenant
from tapevault.errors import AuthError, Conflict, InvalidRequest, NotFound, QuotaExceeded
from tapevault.http.asgi import (
    Receive,
    Scope,
    Send,
    client_ip,
    note_tenant,
    query_params,
    request_headers,
    request_id,
    scope_request_id,
    send_json,
)
from tapevault.http.context import AppContext
from tapevault.http.forwarded import TrustedProxies
from tapevault.http.wording import say
from tapevault.ingest.durable import (
    BACKLOG_BYTES,
    Ack,
    AckSink,
    DurableStream,
    GroupCommitter,
    StreamTakenOver,
    StreamUnconfirmed,
    TaskAcks,
)
from tapevault.ingest.pcm import ENCODINGS
from tapevault.ingest.streamcopy import StreamCopier
from tapevault.observe.metrics import (
    live_streams,
    stream_ack_latency,
    stream_copy_behind,
    stream_copy_failures,
)

log = logging.getLogger("tapevault.stream")

_DIGITS = re.compile(r"[0-9]{1,9}")
TICKET_SECONDS = 60
HEARTBEAT_SECONDS = 10.0  # renews the lease recovery honours (recovery.STALE_SECONDS)
TAKEN_OVER = 4410
# A close (the recording queued for finalization) that failed is retried after 1 s, then ever
# less often, up to this: a disk that was full, or a database that was down, comes back.
CLOSE_RETRY_MAX_SECONDS = 30.0


def stream_format(params: dict[str, str]) -> tuple[str, int, int]:
    """(encoding, sample_rate, channels) from the query, or ``InvalidRequest``."""
    encoding = params.get("encoding", "pcm_s16le")
    if encoding not in ENCODINGS:
        raise InvalidRequest(f"encoding must be one of {', '.join(ENCODINGS)}")
    rate_text = params.get("sample_rate", "16000")
    if not _DIGITS.fullmatch(rate_text) or not 8000 <= int(rate_text) <= 48000:
        raise InvalidRequest("sample_rate must be an integer from 8000 to 48000")
    channels_text = params.get("channels", "1")
    if channels_text not in ("1", "2"):
        raise InvalidRequest("channels must be 1 or 2")
    return encoding, int(rate_text), int(channels_text)


def is_end(text: str) -> bool:
    """Whether a text message ends the stream: ``{"type": "end"}`` however it is spaced (JSON
    from any client library), or the bare word ``end``. Other text is ignored."""
    text = text.strip()
    if text == "end":
        return True
    if not text.startswith("{") or len(text) > 1024:
        return False
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return isinstance(message, dict) and message.get("type") == "end"


def hash_ticket(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def issue_ticket(ctx: AppContext, caller: SukiCaller, session_id: str) -> dict[str, Any]:
    """A single-use ticket for a browser to open this session's stream."""
    ctx.vault.sessions.check_accepts_audio(caller.partner, session_id)
    ticket = secrets.token_urlsafe(24)
    expires = now_ms(ctx.vault.clock) + TICKET_SECONDS * 1000
    ctx.vault.ingest.add_stream_ticket(
        hash_ticket(ticket), caller.partner.partner_id, session_id, caller.provider_id, expires
    )
    return {"ticket": ticket, "expires_at": expires // 1000}


class StreamHub:
    """What every live-stream endpoint of a process shares: one group committer (so all streams
    sync in the same batches), one copier to the object store, one heartbeat (the lease) for all
    the recordings this process writes, and the retries of closes that failed."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.writer_id = ctx.process_id
        self._committer: GroupCommitter | None = None
        self._copier: StreamCopier | None = None
        self._open = 0
        self._heartbeat: asyncio.Task[None] | None = None
        # Streams that ended but whose recording could not be closed (queued for finalization):
        # still RECEIVING and ours, so no recovery takes them while this process lives.
        self._unclosed: dict[str, Recording] = {}
        self._retrying: asyncio.Task[None] | None = None
        self.close_retry_seconds = 1.0

    def committer(self) -> GroupCommitter:
        if self._committer is None:
            self._committer = GroupCommitter(
                self.ctx.vault.local.streams_dir,
                held=self._held,
                on_batch=stream_ack_latency.observe,
            )
        return self._committer

    def copier(self) -> StreamCopier:
        if self._copier is None:
            local = self.ctx.vault.local
            interval = self.ctx.settings.stream_upload_interval_seconds
            if interval and local.store_on_this_disk():
                # Measured: copies' fsyncs on the spools' own filesystem doubled the group
                # commits' ack latency (BENCHMARKS.md), for a copy no node loss spares.
                log.info("live streams are not copied: the store is on this node's own disk")
                interval = 0
            self._copier = StreamCopier(
                local.promote_range,
                interval,
                on_failure=stream_copy_failures.inc,
                on_behind=stream_copy_behind.set,
            )
        return self._copier

    def copy_health(self) -> float | None:
        """For /healthz: since when copies to the store fail (None: they do not)."""
        return None if self._copier is None else self._copier.failing_since

    def _held(self, keys: Sequence[str]) -> Collection[str]:
        """The fencing check, once per group commit for all streams (committer's thread)."""
        return self.ctx.vault.ingest.streams_held_by(self.writer_id)

    def opened(self) -> None:
        self._open += 1
        live_streams.inc()
        self._keep_beating()

    def closed(self) -> None:
        self._open -= 1
        live_streams.dec()

    def start(self, recording: Recording, acks: AckSink | Ack) -> DurableStream:
        """The open file for an admitted stream's audio, in this process's group commit."""
        path = self.ctx.vault.local.stream_spool(recording.recording_id)
        stream = self.committer().open(path, acks, key=recording.recording_id)
        self.copier().watch(stream, recording.recording_id, path)
        self.opened()
        return stream

    async def end(self, stream: DurableStream, recording: Recording) -> OSError | None:
        """Sync what is left (the final ack goes out), then queue the recording for
        finalization; returns the error that ended the stream early, if any (nothing more was
        acked). A close that fails is retried until it succeeds (``unclosed``)."""
        error: OSError | None = None
        try:
            await self.committer().finish(stream)
        except OSError as exc:
            error = exc
        try:
            await self.copier().release(stream)
            if not isinstance(error, StreamTakenOver):  # else the recording is no longer ours
                try:
                    await self.ctx.blocking(self.ctx.vault.ingest.close_stream, recording)
                    if error is None and stream.synced > stream.stored:
                        # The close put the whole spool in the store: the last ack says so.
                        stream.stored = stream.synced
                        stream.acks.copied(stream.stored)
                        await stream.acks.settle()
                except Exception:
                    log.exception("closing stream %s failed; retrying", recording.recording_id)
                    self._unclosed[recording.recording_id] = recording
                    self._keep_beating()
                    if self._retrying is None or self._retrying.done():
                        self._retrying = asyncio.get_running_loop().create_task(self._retry())
        finally:
            # Only now: the close copies the spool into the object store, which may take a
            # while, and the lease must hold meanwhile or another node could take the stream
            # over without its spool.
            self.closed()
        return error

    @property
    def unclosed(self) -> int:
        """How many ended streams' recordings wait for a close to be retried."""
        return len(self._unclosed)

    async def _retry(self) -> None:
        """Close the recordings whose close failed, backing off, until none is left: their
        acknowledged audio is then finalized and served without a restart."""
        delay = self.close_retry_seconds
        while self._unclosed:
            await asyncio.sleep(delay)
            for recording_id, recording in list(self._unclosed.items()):
                try:
                    await self.ctx.blocking(self.ctx.vault.ingest.close_stream, recording)
                except Exception as exc:
                    log.warning("closing stream %s failed again: %s", recording_id, exc)
                else:
                    del self._unclosed[recording_id]
                    log.warning("closed stream %s after retrying", recording_id)
            delay = min(delay * 2, CLOSE_RETRY_MAX_SECONDS)

    def _keep_beating(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        """While this process writes streams (or holds ones it could not close yet), renew its
        lease on them, so that no recovery takes them over. A failed beat is logged and the
        next one tried: one database hiccup must not let live streams look dead."""
        while self._open or self._unclosed:
            try:
                await self.ctx.blocking(self.ctx.vault.ingest.heartbeat, self.writer_id)
            except Exception:
                log.exception("heartbeat failed; retrying")
            await asyncio.sleep(HEARTBEAT_SECONDS)


class StreamEndpoint:
    """The stream route; one instance serves every stream of the process.

    ``open`` and ``close`` are the stream's life in the vault, shared with the fast path
    (``tapevault.http.wsdirect``, which ``tapevault serve`` uses for this route); calling the
    instance serves a stream over ASGI, for any other server and as the fallback.
    """

    def __init__(self, ctx: AppContext, hub: StreamHub) -> None:
        self.ctx = ctx
        self.hub = hub
        self.writer_id = hub.writer_id
        self.proxies = TrustedProxies(ctx.settings.trusted_proxies)

    def client_address(self, peer: str | None, headers: dict[str, str]) -> str | None:
        """The client of a connection that left ASGI before uvicorn's scope was built (the
        direct path): the peer, or whom a trusted proxy names (``tapevault.http.forwarded``)."""
        return self.proxies.client(peer, headers.get("x-forwarded-for"))

    async def open(
        self,
        session_id: str,
        params: dict[str, str],
        headers: dict[str, str],
        client: str | None = None,
        request: str | None = None,
    ) -> tuple[Recording, int]:
        """Admit a stream and start its recording: (the recording, bytes per sample frame).
        Raises ``InvalidRequest``, ``AuthError``, ``NotFound`` or ``Conflict`` to refuse; an
        ``AuthError`` (close 4401) is in the access log like any authentication failure, from
        ``client`` (the peer's address) with ``request`` (its id; else one from the headers)."""
        try:
            partner, fmt = await self._admit(session_id, params, headers)
        except AuthError as exc:
            kind = "stream_ticket" if params.get("ticket") else "suki_token"
            auth_failed(
                self.ctx, exc, kind, client, headers, "live_stream", session_id, request=request
            )
            raise
        recording = await self.ctx.metadata(
            lambda: self.ctx.vault.ingest.open_stream(
                partner,
                session_id,
                f"stream/{fmt[0]}",
                self.writer_id,
                sample_rate=fmt[1],
                channels=fmt[2],
                bits_per_sample=ENCODINGS[fmt[0]] * 8,
            )
        )
        return recording, ENCODINGS[fmt[0]] * fmt[2]

    @property
    def committer(self) -> GroupCommitter:
        return self.hub.committer()

    def start(self, recording: Recording, acks: AckSink | Ack) -> DurableStream:
        """The open file for an admitted stream's audio (``StreamHub.start``)."""
        return self.hub.start(recording, acks)

    async def end(self, stream: DurableStream, recording: Recording) -> OSError | None:
        """Sync, final ack, recording closed (``StreamHub.end``); the sync's error, if any."""
        return await self.hub.end(stream, recording)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await send_json(send, 426, {"code": 426, "message": "Use a WebSocket."})
            return
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        # Accept first, so that a refusal can carry a close code and reason browsers can read.
        await send({"type": "websocket.accept"})
        try:
            recording, frame_bytes = await self.open(
                scope["path_params"]["session_id"],
                query_params(scope),
                request_headers(scope),
                client_ip(scope),
                scope_request_id(scope),
            )
        except (InvalidRequest, AuthError, NotFound, Conflict, QuotaExceeded) as exc:
            await self._close(send, close_code(exc), say(exc))
            return
        except Exception:
            log.exception("could not open a stream")
            await self._close(send, 1011, "internal error")
            return

        note_tenant(scope, recording.partner_id)

        async def ack(upto: int, stored: int) -> None:
            text = f'{{"type":"ack","bytes":{upto},"stored":{stored}}}'
            await send({"type": "websocket.send", "text": text})

        committer = self.committer
        acks = ClosingAcks(ack, self._close, send)
        stream = self.start(recording, acks)
        code, reason = 1000, "stream complete"
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    code = 0  # the client is gone: nothing more to send
                    break
                data = message.get("bytes")
                if data is None:
                    if is_end(message.get("text") or ""):
                        break
                    continue
                if len(data) % frame_bytes:
                    code, reason = 4400, partial_frame_reason(len(data), frame_bytes)
                    break
                try:
                    backlog = stream.append(data)
                except OSError as exc:
                    code, reason = 1011, f"storage failure: {exc.strerror}"
                    break
                committer.dirty()
                if backlog >= BACKLOG_BYTES:
                    await committer.drain(stream)  # uvicorn reads nothing more meanwhile
        finally:
            error = await self.end(stream, recording)
            if error is not None:
                code, reason = failure_close(error, stream.synced) if code else (0, "")
        if code and not acks.closed:
            await self._close(send, code, reason)

    async def _admit(
        self, session_id: str, params: dict[str, str], headers: dict[str, str]
    ) -> tuple[Tenant, tuple[str, int, int]]:
        fmt = stream_format(params)
        ticket = params.get("ticket")
        if ticket and not headers.get("sdp_suki_token"):
            found = await self.ctx.metadata(
                self.ctx.vault.ingest.consume_stream_ticket,
                hash_ticket(ticket),
                now_ms(self.ctx.vault.clock),
            )
            if found is None or found[1] != session_id:
                raise AuthError("Invalid, used or expired stream ticket.")
            partner = await self.ctx.metadata(self.ctx.vault.tenants.get_tenant, found[0])
            if partner is None:
                raise AuthError("Invalid, used or expired stream ticket.")
            return partner, fmt
        caller = await self.ctx.metadata(
            self.ctx.suki_tokens.verify,
            headers.get("sdp_suki_token"),
            headers.get("sdp_provider_id"),
        )
        return caller.partner, fmt

    @staticmethod
    async def _close(send: Send, code: int, reason: str) -> None:
        try:
            await send({"type": "websocket.close", "code": code, "reason": reason[:120]})
        except Exception:  # the peer may already be gone
            log.debug("close after disconnect", exc_info=True)


def auth_failed(
    ctx: AppContext,
    exc: AuthError,
    kind: str,
    client: str | None,
    headers: dict[str, str],
    mode: str,
    session_id: str | None = None,
    *,
    request: str | None = None,
) -> None:
    """Record a WebSocket refused with 4401 as the ``auth.failure`` it is (status 401), so a
    stream's bad credentials are in the log like an HTTP request's (and aggregated the same
    way, per source)."""
    ctx.access_log.record(
        AccessEvent(
            action=Action.AUTH_FAILURE,
            actor=Actor(
                kind=kind,
                client_ip=client,
                user_agent=headers.get("user-agent"),
                request_id=request or request_id(headers),
            ),
            status=401,
            at_ms=now_ms(ctx.vault.clock),
            session_id=session_id,
            mode=mode,
            error=say(exc),
        )
    )


def peer_address(transport: asyncio.BaseTransport | None) -> str | None:
    """The host of a connection's peer (None for a Unix socket or no connection)."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


class ClosingAcks(TaskAcks):
    """Acks for the ASGI route that also close the connection as soon as the stream fails
    (taken over, or a failed sync): the endpoint itself waits in ``receive`` and would only
    notice with the client's next message, which a client waiting for its ack never sends."""

    def __init__(
        self,
        send: Ack,
        close: Callable[[Send, int, str], Awaitable[None]],
        asgi_send: Send,
    ) -> None:
        super().__init__(send)
        self._close = close
        self._asgi_send = asgi_send
        self.closed = False
        self._closing: asyncio.Task[None] | None = None

    def fail(self, error: OSError) -> None:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close_after(error))

    async def _close_after(self, error: OSError) -> None:
        await self.settle()  # an ack already on its way goes out before the close
        self.closed = True
        await self._close(self._asgi_send, *failure_close(error, self._acked))


def failure_close(error: OSError, acked: int) -> tuple[int, str]:
    """The close code and reason for a stream that ``error`` ended after ``acked`` bytes."""
    if isinstance(error, StreamTakenOver):
        return TAKEN_OVER, (
            f"stream taken over by recovery; audio after byte {acked} was not acknowledged"
        )
    if isinstance(error, StreamUnconfirmed):
        return 1011, f"database unavailable; audio after byte {acked} was not acknowledged"
    return 1011, sync_failure_reason(error, acked)


def partial_frame_reason(size: int, frame_bytes: int) -> str:
    return (
        f"message of {size} bytes is not a whole number of "
        f"{frame_bytes}-byte frames; it was not stored"
    )


def sync_failure_reason(exc: OSError, synced: int) -> str:
    return (
        f"storage failure: sync failed ({exc.strerror}); audio after byte "
        f"{synced} was not acknowledged"
    )


def close_code(exc: Exception) -> int:
    """The close code that refuses a stream for an admission error."""
    match exc:
        case AuthError():
            return 4401
        case Conflict():
            return 4409
        case QuotaExceeded():
            return 4507
        case NotFound():
            return 4404
        case _:
            return 4400
