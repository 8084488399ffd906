"""Twilio Media Streams: ``WS /twilio/media-stream``.

Speaks Twilio's protocol (JSON messages ``connected``, ``start``, ``media``, ``mark``, ``dtmf``,
``stop``). One call becomes one session keyed by its ``callSid``, with one recording per track:
``inbound`` (the caller) and ``outbound`` (the agent). Each track is written at its position on
the call's timeline: ``media.timestamp`` is milliseconds since the stream started, so a gap before
a chunk is filled with silence and a chunk that overlaps what is already written is trimmed. Both
recordings carry ``media_start_epoch_ms`` (when the stream started, by the server's clock), the
source format (``stream/pcm_mulaw``) and the sample rate; finalization expands μ-law to PCM16.

Authentication, either of:
- a ``sdp_suki_token`` custom parameter (``<Parameter name="sdp_suki_token" value="..."/>``);
- a signed stream URL ``/twilio/media-stream?p=<partner_id>&e=<unix expiry>&s=<signature>``,
  printed by ``tapevault twilio url --partner ID --ttl 30d``; suited to static TwiML.

The stream is durable like any live stream (group commit, crash recovery); Twilio reads no acks.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tapevault.core.clock import now_ms
from tapevault.core.model import Partner, Recording, Session
from tapevault.errors import AuthError, InvalidRequest, TapevaultError
from tapevault.http.asgi import Receive, Scope, Send, query_params
from tapevault.http.context import AppContext
from tapevault.http.stream import StreamHub
from tapevault.ingest.durable import DurableStream
from tapevault.ingest.pcm import SILENCE

log = logging.getLogger("tapevault.twilio")

TRACKS = ("inbound", "outbound")
ENCODING = "pcm_mulaw"
MAX_GAP_SECONDS = 600  # a timestamp jump beyond this is refused, not filled with silence


def sign_stream_url(partner: Partner, expires: int) -> str:
    """The query string of a signed Twilio stream URL for ``partner``."""
    return f"p={partner.partner_id}&e={expires}&s={_url_mac(partner, expires)}"


def _url_mac(partner: Partner, expires: int) -> str:
    message = f"tapevault-twilio-v1\n{partner.partner_id}\n{expires}".encode()
    digest = hmac.digest(partner.jwt_secret.encode(), message, "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Track:
    recording: Recording
    stream: DurableStream
    bytes_per_ms: float
    dropped: int = 0


@dataclass
class Call:
    session: Session
    tracks: dict[str, Track] = field(default_factory=dict)


class TwilioMediaStream:
    def __init__(self, ctx: AppContext, hub: StreamHub) -> None:
        self.ctx = ctx
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        call: Call | None = None
        code, reason = 1000, "call ended"
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    code = 0
                    break
                text = message.get("text") or (message.get("bytes") or b"").decode(
                    "utf-8", "replace"
                )
                try:
                    event: dict[str, Any] = orjson.loads(text)
                except orjson.JSONDecodeError:
                    raise InvalidRequest("messages must be Twilio Media Streams JSON") from None
                kind = event.get("event")
                if kind == "start" and call is None:
                    call = await self._start(scope, event)
                elif kind == "media" and call is not None:
                    self._media(call, event)
                elif kind == "stop":
                    break
                # connected, mark, dtmf and anything newer need no action
        except (InvalidRequest, AuthError) as exc:
            code = 4401 if isinstance(exc, AuthError) else 4400
            reason = exc.message
        except TapevaultError as exc:
            code, reason = 4400, exc.message
        finally:
            if call is not None:
                await self._finish(call)
        if code:
            try:
                await send({"type": "websocket.close", "code": code, "reason": reason[:120]})
            except Exception:
                log.debug("close after disconnect", exc_info=True)

    async def _start(self, scope: Scope, event: dict[str, Any]) -> Call:
        start = event.get("start")
        if not isinstance(start, dict):
            raise InvalidRequest("start message without a start object")
        partner = await self._authenticate(scope, start.get("customParameters") or {})
        call_sid = start.get("callSid")
        if not isinstance(call_sid, str):
            raise InvalidRequest("start message without callSid")
        fmt = start.get("mediaFormat") or {}
        if fmt.get("encoding", "audio/x-mulaw") != "audio/x-mulaw":
            raise InvalidRequest(f"unsupported media encoding {fmt.get('encoding')!r}")
        rate = int(fmt.get("sampleRate", 8000))
        if not 8000 <= rate <= 48000 or int(fmt.get("channels", 1)) != 1:
            raise InvalidRequest("mediaFormat must be mono μ-law at 8-48 kHz")
        tracks = [t for t in start.get("tracks", ["inbound"]) if t in TRACKS] or ["inbound"]
        vault = self.ctx.vault
        session = await self.ctx.blocking(vault.call_session, partner, call_sid)
        started = now_ms(vault.clock)
        call = Call(session=session)
        committer = self.hub.committer()
        for name in tracks:
            recording = await self.ctx.blocking(
                lambda name=name: vault.open_stream(
                    partner,
                    session.session_id,
                    f"stream/{ENCODING}",
                    self.hub.writer_id,
                    sample_rate=rate,
                    channels=1,
                    bits_per_sample=8,
                    channel=name,
                    media_start_epoch_ms=started,
                )
            )
            stream = committer.open(vault.stream_path(recording.recording_id), _no_ack)
            self.hub.opened()
            call.tracks[name] = Track(recording, stream, rate / 1000)
        return call

    async def _authenticate(self, scope: Scope, custom: dict[str, Any]) -> Partner:
        params = query_params(scope)
        repo = self.ctx.vault.repo
        if "s" in params:
            partner_id, expires_text = params.get("p", ""), params.get("e", "")
            partner = await self.ctx.metadata(repo.get_partner, partner_id[:64])
            if (
                partner is None
                or not expires_text.isdigit()
                or not hmac.compare_digest(_url_mac(partner, int(expires_text)), params["s"])
            ):
                raise AuthError("invalid stream URL signature")
            if int(expires_text) < time.time():
                raise AuthError("the stream URL has expired")
            return partner
        token = custom.get("sdp_suki_token")
        if not isinstance(token, str):
            raise AuthError("no sdp_suki_token custom parameter and no signed URL")
        caller = await self.ctx.metadata(self.ctx.suki_tokens.verify, token, None)
        return caller.partner

    def _media(self, call: Call, event: dict[str, Any]) -> None:
        media = event.get("media")
        if not isinstance(media, dict):
            return
        track = call.tracks.get(str(media.get("track", "inbound")))
        if track is None:
            return
        try:
            payload = base64.b64decode(media.get("payload", ""), validate=True)
            timestamp = int(media.get("timestamp", 0))
        except (binascii.Error, ValueError, TypeError):
            raise InvalidRequest("media payload is not base64 or timestamp not a number") from None
        position = int(timestamp * track.bytes_per_ms)
        written = track.stream.written
        if position > written:
            gap = position - written
            if gap > MAX_GAP_SECONDS * 1000 * track.bytes_per_ms:
                raise InvalidRequest(f"timestamp {timestamp} jumps too far ahead")
            track.stream.append(SILENCE[ENCODING] * gap)
        elif position < written:
            overlap = written - position
            track.dropped += min(overlap, len(payload))
            payload = payload[overlap:]
        if payload:
            track.stream.append(payload)
        self.hub.committer().dirty()

    async def _finish(self, call: Call) -> None:
        committer = self.hub.committer()
        vault = self.ctx.vault
        for track in call.tracks.values():
            try:
                await committer.finish(track.stream)
            except OSError:
                log.exception("sync failed finishing %s", track.recording.recording_id)
            self.hub.closed()
            await self.ctx.blocking(vault.close_stream, track.recording)
        partner = await self.ctx.metadata(vault.repo.get_partner, call.session.partner_id)
        if partner is not None:
            await self.ctx.blocking(vault.end_session, partner, call.session.session_id)


async def _no_ack(_upto: int) -> None:
    """Twilio reads nothing back; durability still comes from the group commit."""
