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

import asyncio
import base64
import binascii
import hmac
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tapevault.core.clock import now_ms
from tapevault.core.model import Recording, Session, Tenant
from tapevault.errors import AuthError, InvalidRequest, TapevaultError
from tapevault.http.asgi import Receive, Scope, Send, query_params
from tapevault.http.context import AppContext
from tapevault.http.stream import TAKEN_OVER, StreamHub
from tapevault.ingest.durable import BACKLOG_BYTES, DurableStream, NoAcks, StreamTakenOver
from tapevault.ingest.pcm import SILENCE

log = logging.getLogger("tapevault.twilio")

TRACKS = ("inbound", "outbound")
ENCODING = "pcm_mulaw"
RATE = 8000
BYTES_PER_MS = RATE // 1000  # μ-law: one byte a sample
START_DEADLINE_SECONDS = 10.0
MAX_MESSAGE_BEFORE_START = 64 * 1024
TIMESTAMP_LEAD_MS = 5_000  # network jitter and buffering Twilio may add
MAX_CALL_BYTES = 12 * 3600 * RATE  # 12 hours a track
_DIGITS = re.compile(r"[0-9]{1,12}")


def sign_stream_url(partner: Tenant, expires: int) -> str:
    """The query string of a signed Twilio stream URL for ``partner``."""
    return f"p={partner.partner_id}&e={expires}&s={_url_mac(partner, expires)}"


def _url_mac(partner: Tenant, expires: int) -> str:
    message = f"tapevault-twilio-v1\n{partner.partner_id}\n{expires}".encode()
    digest = hmac.digest(partner.jwt_secret.encode(), message, "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Track:
    recording: Recording
    stream: DurableStream
    dropped: int = 0


@dataclass
class Call:
    """Built up as the call starts, so whatever was opened is closed again at the end."""

    session: Session | None = None
    partner: Tenant | None = None
    started: float = 0.0
    tracks: dict[str, Track] = field(default_factory=dict)


def _event(raw: str | bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("messages must be Twilio Media Streams JSON") from None
    if not isinstance(event, dict):
        raise InvalidRequest("messages must be JSON objects")
    return event


class TwilioMediaStream:
    def __init__(self, ctx: AppContext, hub: StreamHub) -> None:
        self.ctx = ctx
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        call = Call()
        code, reason = 1000, "call ended"
        try:
            while True:
                if call.session is None:
                    # Before authentication a peer gets little: a deadline and small messages.
                    try:
                        message = await asyncio.wait_for(receive(), START_DEADLINE_SECONDS)
                    except TimeoutError:
                        raise InvalidRequest("no start message in time") from None
                else:
                    message = await receive()
                if message["type"] == "websocket.disconnect":
                    code = 0
                    break
                raw = message.get("text") or message.get("bytes") or b""
                if call.session is None and len(raw) > MAX_MESSAGE_BEFORE_START:
                    raise InvalidRequest("message too large")
                event = _event(raw)
                kind = event.get("event")
                if kind == "start" and call.session is None:
                    await self._start(scope, event, call)
                elif kind == "media" and call.session is not None:
                    self._media(call, event)
                    await self._drain(call)
                elif kind == "stop":
                    break
                # connected, mark, dtmf and anything newer need no action
        except (InvalidRequest, AuthError) as exc:
            code = 4401 if isinstance(exc, AuthError) else 4400
            reason = exc.message
        except TapevaultError as exc:
            code, reason = 4400, exc.message
        except StreamTakenOver:  # recovery on another server took a track over
            code, reason = TAKEN_OVER, "stream taken over by recovery"
        except OSError as exc:  # a track's write or sync failed
            code, reason = 1011, f"storage failure: {exc.strerror}"
        except Exception:
            log.exception("Twilio media stream failed")
            code, reason = 1011, "internal error"
        finally:
            await self._finish(call)
        if code:
            try:
                await send({"type": "websocket.close", "code": code, "reason": reason[:120]})
            except Exception:
                log.debug("close after disconnect", exc_info=True)

    async def _start(self, scope: Scope, event: dict[str, Any], call: Call) -> None:
        start = event.get("start")
        if not isinstance(start, dict):
            raise InvalidRequest("start message without a start object")
        custom = start.get("customParameters")
        partner = await self._authenticate(scope, custom if isinstance(custom, dict) else {})
        call_sid = start.get("callSid")
        if not isinstance(call_sid, str):
            raise InvalidRequest("start message without callSid")
        fmt = start.get("mediaFormat")
        fmt = fmt if isinstance(fmt, dict) else {}
        # Twilio sends 8 kHz mono μ-law; anything else is not Twilio.
        if (
            fmt.get("encoding", "audio/x-mulaw") != "audio/x-mulaw"
            or fmt.get("sampleRate", RATE) not in (RATE, str(RATE))
            or fmt.get("channels", 1) not in (1, "1")
        ):
            raise InvalidRequest("mediaFormat must be audio/x-mulaw, 8000 Hz, mono")
        requested = start.get("tracks")
        requested = requested if isinstance(requested, list) else ["inbound"]
        tracks = [t for t in TRACKS if t in requested] or ["inbound"]
        vault = self.ctx.vault
        session = await self.ctx.blocking(vault.call_session, partner, call_sid)
        call.session = session
        call.partner = partner
        call.started = time.monotonic()
        started = now_ms(vault.clock)
        for name in tracks:
            recording = await self.ctx.blocking(
                lambda name=name: vault.open_stream(
                    partner,
                    session.session_id,
                    f"stream/{ENCODING}",
                    self.hub.writer_id,
                    sample_rate=RATE,
                    channels=1,
                    bits_per_sample=8,
                    channel=name,
                    media_start_epoch_ms=started,
                )
            )
            call.tracks[name] = Track(recording, self.hub.start(recording, NoAcks()))

    async def _authenticate(self, scope: Scope, custom: dict[str, Any]) -> Tenant:
        params = query_params(scope)
        repo = self.ctx.vault.repo
        if "s" in params:
            partner_id, expires_text = params.get("p", ""), params.get("e", "")
            partner = await self.ctx.metadata(repo.get_tenant, partner_id[:64])
            given = params["s"].encode("ascii", "replace")
            if (
                partner is None
                or not _DIGITS.fullmatch(expires_text)
                or not hmac.compare_digest(_url_mac(partner, int(expires_text)).encode(), given)
            ):
                raise AuthError("invalid stream URL signature")
            if int(expires_text) < self.ctx.vault.clock.now():
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
            payload = base64.b64decode(str(media.get("payload", "")), validate=True)
            timestamp = int(str(media.get("timestamp", "0")))
        except (binascii.Error, ValueError):
            raise InvalidRequest("media payload is not base64 or timestamp not a number") from None
        # Twilio's timestamps follow real time; one far ahead of the call's age would make us
        # write silence nobody sent (a hostile peer could fill the disk with one message).
        age_ms = (time.monotonic() - call.started) * 1000
        if timestamp < 0 or timestamp > age_ms + TIMESTAMP_LEAD_MS:
            raise InvalidRequest(f"timestamp {timestamp} is ahead of the call's clock")
        position = timestamp * BYTES_PER_MS
        received = track.stream.received
        if position + len(payload) > MAX_CALL_BYTES:
            raise InvalidRequest("the call is longer than tapevault accepts")
        if position > received:
            track.stream.append(SILENCE[ENCODING] * (position - received))
        elif position < received:
            overlap = received - position
            track.dropped += min(overlap, len(payload))
            payload = payload[overlap:]
        if payload:
            track.stream.append(payload)
        self.hub.committer().dirty()

    async def _drain(self, call: Call) -> None:
        """Read no more while a track holds ``BACKLOG_BYTES`` the group commit has not taken."""
        for track in call.tracks.values():
            if track.stream.backlog >= BACKLOG_BYTES:
                await self.hub.committer().drain(track.stream)

    async def _finish(self, call: Call) -> None:
        """Close whatever tracks were opened, and end the call's session."""
        for track in call.tracks.values():
            error = await self.hub.end(track.stream, track.recording)
            if error is not None:
                log.error("track %s ended early", track.recording.recording_id, exc_info=error)
        if call.session is not None and call.partner is not None:
            await self.ctx.blocking(
                self.ctx.vault.end_session, call.partner, call.session.session_id
            )
