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
- a signed stream URL ``/twilio/media-stream?m=t&e=<unix expiry>&p=<tenant>&k=<key>&s=<sig>``,
  printed by ``tapevault twilio url --tenant ID --ttl 30d``; suited to static TwiML. It is
  signed by the media URL key ring (``core/signing.py``), so it works for every tenant, RS256
  ones too, and ``tapevault keys remove KID`` revokes the URLs that key signed. Twilio's
  ``<Stream url>`` does not promise to keep a query string, so the same URL is also taken from
  a ``signed_url`` custom parameter (``tapevault twilio url --twiml`` prints that TwiML).

URLs of the first kind (``?p=&e=&s=``, signed with the tenant's Suki ``jwt_secret``, which no
key removal reaches) are still accepted until ``LEGACY_URLS_UNTIL``, each use logged as
deprecated, so that TwiML deployed with them keeps recording while it is re-issued.

The stream is durable like any live stream (group commit, crash recovery); Twilio reads no acks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from tapevault.core.clock import now_ms
from tapevault.core.model import Recording, Session, Tenant
from tapevault.errors import AuthError, InvalidRequest, QuotaExceeded, TapevaultError, UrlRejected
from tapevault.http.asgi import (
    Receive,
    Scope,
    Send,
    client_ip,
    note_tenant,
    query_params,
    request_headers,
    scope_request_id,
)
from tapevault.http.context import AppContext
from tapevault.http.stream import TAKEN_OVER, StreamHub, auth_failed
from tapevault.http.wording import say
from tapevault.ingest.durable import BACKLOG_BYTES, DurableStream, NoAcks, StreamTakenOver
from tapevault.ingest.pcm import SILENCE
from tapevault.numbers import is_canonical
from tapevault.observe.metrics import count_refusal

log = logging.getLogger("tapevault.twilio")

TRACKS = ("inbound", "outbound")
ENCODING = "pcm_mulaw"
RATE = 8000
BYTES_PER_MS = RATE // 1000  # μ-law: one byte a sample
START_DEADLINE_SECONDS = 10.0  # from the handshake to the start message, however busy the peer
MAX_MESSAGE_BEFORE_START = 64 * 1024
MAX_MESSAGES_BEFORE_START = 4  # Twilio sends ``connected``, then ``start``
TIMESTAMP_LEAD_MS = 5_000  # network jitter and buffering Twilio may add
MAX_CALL_BYTES = 12 * 3600 * RATE  # 12 hours a track
SIGNED_URL_PARAMETER = "signed_url"  # the custom parameter that may carry the signed URL
# 2027-04-01T00:00:00Z: the last moment a jwt_secret-signed stream URL (no ``k=``) is accepted.
LEGACY_URLS_UNTIL = 1_806_537_600


def _legacy_url_mac(partner: Tenant, expires: int) -> str:
    """The signature of a stream URL of the first kind (``?p=&e=&s=``), for the deprecation
    period only: it hangs on the tenant's Suki secret, beyond the key ring's reach."""
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


async def authenticate(ctx: AppContext, params: dict[str, str], custom: dict[str, Any]) -> Tenant:
    """The tenant a Twilio stream is for: from its signed URL's query ``params``, or else from
    the ``sdp_suki_token`` custom parameter of its ``start`` message. Raises ``AuthError``."""
    signed_url = custom.get(SIGNED_URL_PARAMETER)
    if "s" not in params and isinstance(signed_url, str) and len(signed_url) <= 2048:
        params = dict(parse_qsl(urlsplit(signed_url).query))
    if "s" in params:
        if "k" not in params:
            return await _legacy_url(ctx, params)
        try:
            partner_id = await ctx.metadata(ctx.vault.media.authorize_twilio, params)
        except UrlRejected as exc:
            count_refusal(exc.reason)
            raise AuthError(
                "the stream URL has expired"
                if exc.reason == "expired"
                else "invalid stream URL signature (altered, or its key was removed)"
            ) from None
        partner = await ctx.metadata(ctx.vault.tenants.get_tenant, partner_id)
        if partner is None:
            raise AuthError("the stream URL's tenant no longer exists")
        return partner
    token = custom.get("sdp_suki_token")
    if not isinstance(token, str):
        raise AuthError("no sdp_suki_token custom parameter and no signed URL")
    caller = await ctx.metadata(ctx.suki_tokens.verify, token, None)
    return caller.partner


async def _legacy_url(ctx: AppContext, params: dict[str, str]) -> Tenant:
    """A stream URL of the first kind, accepted until ``LEGACY_URLS_UNTIL``."""
    now = ctx.vault.clock.now()
    if now >= LEGACY_URLS_UNTIL:
        raise AuthError("stream URLs without k= are no longer accepted: print a new one")
    partner_id, expires_text = params.get("p", ""), params.get("e", "")
    partner = await ctx.metadata(ctx.vault.tenants.get_tenant, partner_id[:64])
    given = params["s"].encode("ascii", "replace")
    if (
        partner is None
        or not is_canonical(expires_text, 12)
        or not hmac.compare_digest(_legacy_url_mac(partner, int(expires_text)).encode(), given)
    ):
        raise AuthError("invalid stream URL signature")
    if int(expires_text) < now:
        raise AuthError("the stream URL has expired")
    log.warning(
        "tenant %s opened a Twilio stream with a deprecated URL signed by its jwt_secret; "
        "accepted until %s, print a new one with `tapevault twilio url`",
        partner.partner_id,
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(LEGACY_URLS_UNTIL)),
    )
    return partner


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
        # Before authentication a peer gets little: one deadline for all it sends before
        # ``start``, a few small messages, and no more.
        deadline = asyncio.get_running_loop().time() + START_DEADLINE_SECONDS
        before_start = 0
        try:
            while True:
                if call.session is None:
                    before_start += 1
                    if before_start > MAX_MESSAGES_BEFORE_START:
                        raise InvalidRequest("too many messages before start")
                    try:
                        async with asyncio.timeout_at(deadline):
                            message = await receive()
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
            reason = say(exc)
            if isinstance(exc, AuthError):
                kind = "signed_url" if "s" in query_params(scope) else "suki_token"
                headers = request_headers(scope)
                auth_failed(
                    self.ctx,
                    exc,
                    kind,
                    client_ip(scope),
                    headers,
                    "twilio_stream",
                    request=scope_request_id(scope),
                )
        except TapevaultError as exc:
            code = 4507 if isinstance(exc, QuotaExceeded) else 4400
            reason = say(exc)
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
        params = query_params(scope)
        partner = await authenticate(self.ctx, params, custom if isinstance(custom, dict) else {})
        note_tenant(scope, partner.partner_id)
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
        session = await self.ctx.blocking(vault.sessions.call_session, partner, call_sid)
        call.session = session
        call.partner = partner
        call.started = time.monotonic()
        started = now_ms(vault.clock)
        for name in tracks:
            recording = await self.ctx.blocking(
                lambda name=name: vault.ingest.open_stream(
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
        """Close whatever tracks were opened, and end the call's session: only when this stream
        recorded something (a stream refused at its start, e.g. for tracks another stream of the
        call is writing, must not end that call)."""
        for track in call.tracks.values():
            error = await self.hub.end(track.stream, track.recording)
            if error is not None:
                log.error("track %s ended early", track.recording.recording_id, exc_info=error)
        if call.session is not None and call.partner is not None and call.tracks:
            await self.ctx.blocking(
                self.ctx.vault.sessions.end_session, call.partner, call.session.session_id
            )
