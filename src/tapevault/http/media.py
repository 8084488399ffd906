"""The media gateway behind every signed URL: ``GET|HEAD /media/{recording_id}.wav`` (audio),
``/media/{recording_id}.peaks.json`` (its waveform peaks, ``?spp=`` one of
``core.peaks.RESOLUTIONS``) and ``/media/{session_id}.json`` (a call's metadata document,
Amigo's ``metadata_url``).

Raw ASGI on purpose (the hot path of every playback): verify the URL's signature and expiry, find
the recording inside the signing tenant, then hand the bytes to ``send_representation``, which
owns Range, conditional requests and multipart. Errors are JSON, and say what to do next.
``serve_playback`` and ``serve_document`` are also what API dialects use to proxy a download.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.clock import now_ms
from tapevault.core.delivery import media_filename
from tapevault.core.model import Recording
from tapevault.core.peaks import RESOLUTIONS, default_resolution, peaks_key
from tapevault.core.signing import UrlGrant, UrlMode
from tapevault.core.vault import Vault
from tapevault.errors import (
    DatabaseUnavailable,
    Gone,
    InvalidRequest,
    NotFound,
    StoreUnavailable,
    Subject,
    TapevaultError,
    Unavailable,
    UrlRejected,
)
from tapevault.http.amigo_shapes import metadata_document
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
from tapevault.http.asgi import send_json as _send_json
from tapevault.http.context import AppContext
from tapevault.http.cors import Cors
from tapevault.http.disconnect import Disconnect
from tapevault.http.forwarded import came_through_proxy
from tapevault.http.ranged import (
    ERROR_BODIES,
    Progress,
    Representation,
    Served,
    send_representation,
)
from tapevault.http.wording import say
from tapevault.http.xaccel import (
    AUTHZ_HEADER,
    accel_answer,
    authz_answer,
    authz_refusal,
    cached_until,
    handoff_range,
)
from tapevault.observe.metrics import count_range_request, count_refusal, media_bytes_sent

log = logging.getLogger("tapevault.media")

PREFIX = "/media/"
AUDIO = ".wav"
DOCUMENT = ".json"
PEAKS = ".peaks.json"
ALLOW = (b"allow", b"GET, HEAD, OPTIONS")
Headers = list[tuple[bytes, bytes]]


def media_error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The one place where gateway errors become HTTP answers."""
    match exc:
        case UrlRejected(reason=reason):
            return 403, {"code": 403, "error": f"url_{reason}", "message": say(exc)}
        case Gone(detail=detail):
            return 410, {
                "code": 410,
                "error": f"recording_{detail.reason}",
                "message": say(exc),
                "reason": detail.reason,
                "at": detail.at,
                "policy": detail.policy,
            }
        case InvalidRequest():
            return 400, {"code": 400, "error": "invalid_request", "message": say(exc)}
        case NotFound():
            return 404, {"code": 404, "error": "not_found", "message": say(exc)}
        case DatabaseUnavailable():
            return 503, {"code": 503, "error": "database_unavailable", "message": say(exc)}
        case StoreUnavailable():
            return 503, {"code": 503, "error": "storage_unavailable", "message": say(exc)}
        case Unavailable():
            off = exc.subject is Subject.CALL_RECORDING_OFF
            error = "not_configured" if off else "audit_unavailable"
            return 503, {"code": 503, "error": error, "message": say(exc)}
        case _:
            return 500, {"code": 500, "error": "internal", "message": "An internal error occurred."}


def download_name(recording: Recording) -> str:
    """The filename of a download: the one direct delivery writes on the stored object."""
    return media_filename(recording)


def grant_headers(cors_headers: Headers, recording: Recording, mode: UrlMode) -> Headers:
    """The headers a response under a grant of ``mode`` adds: a download names its file.
    ``cors_headers`` itself when nothing is added (never mutated downstream: no copy)."""
    if mode is not UrlMode.DOWNLOAD:
        return cors_headers
    disposition = f'attachment; filename="{download_name(recording)}"'
    return [*cors_headers, (b"content-disposition", disposition.encode())]


def representation(recording: Recording) -> Representation:
    return Representation(
        size=recording.size_bytes,
        etag=recording.etag,
        last_modified=recording.created_ms // 1000,
        content_type="audio/wav",
    )


async def serve_recording(
    vault: Vault,
    receive: Receive,
    send: Send,
    method: str,
    headers: Mapping[str, str],
    recording: Recording,
    extra: Headers,
    error_bodies: Mapping[int, bytes] = ERROR_BODIES,
    progress: Progress | None = None,
) -> Served:
    """Answer a GET or HEAD for a stored recording: Range, preconditions, multipart; stop
    reading when the client goes away."""
    store = vault.store
    key = recording.storage_key
    gone = Disconnect(receive)
    try:
        served = await send_representation(
            send,
            method=method,
            headers=headers,
            rep=representation(recording),
            read=lambda offset, length: store.read_range(key, offset, length),
            extra_headers=extra,
            gone=gone,
            error_bodies=error_bodies,
            progress=progress,
        )
    finally:
        gone.close()
    # Counted once the response ended (an hour-long download counts at its end), with what
    # was really sent: a client that went away counts only what it got.
    if served.bytes_sent:
        media_bytes_sent.inc(served.bytes_sent)
    if "range" in headers:
        count_range_request(served.status)
    return served


async def serve_playback(
    ctx: AppContext,
    receive: Receive,
    send: Send,
    method: str,
    headers: Mapping[str, str],
    recording: Recording,
    extra: Headers,
    *,
    actor: Actor,
    credential: str | None,
    mode: str,
    error_bodies: Mapping[int, bytes] = ERROR_BODIES,
    proxied: bool = False,
) -> Served:
    """Serve a recording as part of a playback: the playback's record is durable before the
    first byte (``Unavailable`` otherwise, with nothing sent), and this response's ranges and
    bytes are added to it. ``credential`` names the grant (a URL signature, an API key id), so
    one player's requests fold into one record. ``proxied``: the request came from a trusted
    proxy, so nginx may send the bytes (``TAPEVAULT_ACCEL_REDIRECT``)."""
    playback = await admit_playback(ctx, recording, actor=actor, credential=credential, mode=mode)
    if proxied and ctx.accel is not None:
        handed = await _hand_off(ctx, send, method, headers, recording, extra, playback)
        if handed is not None:
            return handed
    # Counted as it streams, so the durable pending record keeps up with a long response.
    sending = ctx.playbacks.sending(playback)
    try:
        served = await serve_recording(
            ctx.vault,
            receive,
            send,
            method,
            headers,
            recording,
            extra,
            error_bodies,
            None if sending is None else sending.sent,
        )
    except BaseException:
        ctx.playbacks.abandon(playback, sending)
        raise
    # A HEAD (or a 304, a 416) sends no audio: its record gets no ranges, whatever a GET would
    # have sent.
    ranges = served.ranges if served.bytes_sent else []
    ctx.playbacks.served(playback, served.status, ranges, served.bytes_sent, sending)
    return served


async def admit_playback(
    ctx: AppContext, recording: Recording, *, actor: Actor, credential: str | None, mode: str
) -> str:
    """The playback a response of ``recording`` belongs to, its record durable (one per grant
    and client: see ``serve_playback``); raises ``Unavailable``."""
    key = (recording.recording_id, credential, actor.client_ip, actor.user_agent)

    def event() -> AccessEvent:
        return AccessEvent(
            action=Action.MEDIA_PLAYBACK,
            actor=actor,
            status=0,
            at_ms=now_ms(ctx.vault.clock),
            session_id=recording.session_id,
            recording_id=recording.recording_id,
            mode=mode,
        )

    return await ctx.playbacks.admit(key, event)


async def _hand_off(
    ctx: AppContext,
    send: Send,
    method: str,
    headers: Mapping[str, str],
    recording: Recording,
    extra: Headers,
    playback: str,
) -> Served | None:
    """Answer with ``X-Accel-Redirect`` when nginx is bound to send exactly what tapevault
    decided (``http/xaccel.py``); None: tapevault sends the response itself. The playback's
    record is durable already (``admit``); this response counts as authorised until nginx
    reports what it sent."""
    accel = ctx.accel
    assert accel is not None
    rep = representation(recording)
    span = handoff_range(method, headers, rep)
    if span is None or not accel.ready() or accel.file_size(recording.storage_key) != rep.size:
        return None
    start, end = span
    status = 206 if "range" in headers else 200
    delivery = accel.handoffs.hand_off(
        playback, status, start, end - start + 1, now_ms(ctx.vault.clock)
    )
    if delivery is None:
        return None  # too many in flight: tapevault sends this one
    try:
        await accel_answer(
            send,
            location=accel.location,
            key=recording.storage_key,
            delivery_id=delivery,
            rep=rep,
            extra_headers=extra,
        )
    except BaseException:
        accel.handoffs.cancel(delivery)
        raise
    if status == 206:
        count_range_request(206)
    return Served(status, [(start, end)], 0)


async def serve_document(
    send: Send,
    method: str,
    headers: Mapping[str, str],
    body: bytes,
    last_modified: int,
    extra: Headers,
    error_bodies: Mapping[int, bytes] = ERROR_BODIES,
) -> Served:
    """Answer a GET or HEAD for a small JSON document, with the same HTTP rules as audio."""

    async def read(offset: int, length: int) -> AsyncIterator[bytes]:
        yield body[offset : offset + length]

    return await send_representation(
        send,
        method=method,
        headers=headers,
        rep=Representation(
            size=len(body),
            etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"',
            last_modified=last_modified,
            content_type="application/json",
        ),
        read=read,
        extra_headers=extra,
        error_bodies=error_bodies,
    )


def _resolution(text: str | None, recording: Recording) -> int:
    """The resolution ``?spp=`` asks for, or the default for the recording's length."""
    if text is None:
        frames = recording.duration_ms * recording.sample_rate // 1000
        return default_resolution(frames)
    if text not in _RESOLUTION_TEXTS:
        choices = ", ".join(_RESOLUTION_TEXTS)
        raise InvalidRequest(f"spp must be one of {choices} (samples per pixel).")
    return int(text)


_RESOLUTION_TEXTS = tuple(str(spp) for spp in RESOLUTIONS)


class MediaGateway:
    def __init__(self, ctx: AppContext, cors: Cors) -> None:
        self.ctx = ctx
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        headers = request_headers(scope)
        cors_headers = self.cors.response_headers(headers.get("origin"))
        if method not in ("GET", "HEAD"):
            await _send_json(
                send,
                405,
                {"code": 405, "error": "method_not_allowed", "message": f"{method} not allowed."},
                [ALLOW, *cors_headers],
            )
            return
        path: str = scope["path"]
        if path.endswith(PEAKS):
            await self._peaks(scope, receive, send, headers, cors_headers)
            return
        if path.endswith(DOCUMENT):
            await self._document(scope, send, headers, cors_headers)
            return
        recording_id = path[len(PREFIX) : -len(AUDIO)] if path.endswith(AUDIO) else ""
        query = query_params(scope)
        if AUTHZ_HEADER in headers and came_through_proxy(scope):
            await self._authz(scope, send, headers, cors_headers, recording_id, query)
            return
        try:
            if not recording_id or "/" in recording_id:
                raise NotFound("No such media.")
            access = await self.ctx.metadata(
                self.ctx.vault.media.authorize_media, recording_id, query
            )
        except Exception as exc:
            await self._refuse(scope, send, headers, cors_headers, recording_id, exc)
            return
        recording, grant = access.recording, access.grant
        extra = grant_headers(cors_headers, recording, grant.mode)
        try:
            await serve_playback(
                self.ctx,
                receive,
                send,
                method,
                headers,
                recording,
                extra,
                actor=self._actor(scope, headers, grant),
                # One playback per signed URL and client: the signature names the issuance.
                credential=query.get("s"),
                mode=grant.mode.name.lower(),
                proxied=came_through_proxy(scope),
            )
        except Unavailable as exc:
            await self._refuse(scope, send, headers, cors_headers, recording.recording_id, exc)

    async def _authz(
        self,
        scope: Scope,
        send: Send,
        headers: dict[str, str],
        cors_headers: Headers,
        recording_id: str,
        query: dict[str, str],
    ) -> None:
        """nginx asks whether it may serve this playback's ranges itself for a while
        (``auth_request``, ``TAPEVAULT_ACCEL_AUTHZ_SECONDS``; ``http/xaccel.py``). Yes only
        once the playback's record is durable and leased; any doubt is a 401, and nginx hands
        the request to tapevault, which answers (and records) it as always."""
        ctx = self.ctx
        accel = ctx.accel
        if (
            accel is None
            or not accel.lease_seconds
            or scope["method"] != "GET"
            or not recording_id
            or "/" in recording_id
            or not accel.ready()
        ):
            await authz_refusal(send)
            return
        try:
            access = await ctx.metadata(ctx.vault.media.authorize_media, recording_id, query)
            recording, grant = access.recording, access.grant
            rep = representation(recording)
            if rep.size <= 0 or accel.file_size(recording.storage_key) != rep.size:
                raise NotFound("The stored file is not there to hand to nginx.")
            now = now_ms(ctx.vault.clock)
            cache_until = cached_until(now, grant.expires, accel.lease_seconds)
            playback = await admit_playback(
                ctx,
                recording,
                actor=self._actor(scope, headers, grant),
                credential=query.get("s"),
                mode=grant.mode.name.lower(),
            )
        except Exception:  # tapevault answers this request itself, refusal and record included
            await authz_refusal(send)
            return
        # The lease, not this response, keeps the playback open: nginx may start responses of
        # it until the cached answer's last second has passed.
        lease_id = accel.handoffs.lease(playback, (cache_until + 1) * 1000 if cache_until else now)
        ctx.playbacks.abandon(playback)
        if lease_id is None:
            await authz_refusal(send)
            return
        extra = grant_headers(cors_headers, recording, grant.mode)
        await authz_answer(
            send,
            key=recording.storage_key,
            lease_id=lease_id,
            rep=rep,
            cache_until=cache_until,
            extra_headers=extra,
        )

    async def _document(
        self, scope: Scope, send: Send, headers: dict[str, str], cors_headers: Headers
    ) -> None:
        path: str = scope["path"]
        session_id = path[len(PREFIX) : -len(DOCUMENT)]
        try:
            if not session_id or "/" in session_id:
                raise NotFound("No such document.")
            metadata, grant = await self.ctx.metadata(
                self.ctx.calls.authorize_metadata, session_id, query_params(scope)
            )
        except Exception as exc:
            await self._refuse(scope, send, headers, cors_headers, session_id, exc)
            return
        body = metadata_document(metadata)
        event = AccessEvent(
            action=Action.CALL_METADATA,
            actor=self._actor(scope, headers, grant),
            status=200,
            at_ms=now_ms(self.ctx.vault.clock),
            session_id=session_id,
            mode="signed_url",
        )
        try:
            await self.ctx.access_log.commit_async(event)
        except Unavailable as exc:
            await self._refuse(scope, send, headers, cors_headers, session_id, exc)
            return
        await serve_document(
            send,
            scope["method"],
            headers,
            body,
            metadata.media_start_epoch_ms // 1000,
            cors_headers,
        )

    async def _peaks(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        cors_headers: Headers,
    ) -> None:
        """A recording's waveform peaks: the audio's checks (signature, expiry, tenant,
        retention), then the stored JSON at the resolution asked for. ``spp`` is not signed:
        every resolution is a view of the one resource the URL grants."""
        path: str = scope["path"]
        recording_id = path[len(PREFIX) : -len(PEAKS)]
        query = query_params(scope)
        vault = self.ctx.vault
        try:
            if not recording_id or "/" in recording_id:
                raise NotFound("No such media.")
            access = await self.ctx.metadata(vault.media.authorize_peaks, recording_id, query)
            recording = access.recording
            spp = _resolution(query.get("spp"), recording)
            key = peaks_key(recording.storage_key, spp)
            info = await self.ctx.metadata(vault.store.stat, key)
            if info is None:
                raise NotFound("This recording has no waveform peaks (yet).")
            await self.ctx.access_log.commit_async(
                AccessEvent(
                    action=Action.MEDIA_PEAKS,
                    actor=self._actor(scope, headers, access.grant),
                    status=200,
                    at_ms=now_ms(vault.clock),
                    session_id=recording.session_id,
                    recording_id=recording.recording_id,
                    mode=f"peaks_{spp}",
                )
            )
        except Exception as exc:
            await self._refuse(scope, send, headers, cors_headers, recording_id, exc)
            return
        gone = Disconnect(receive)
        try:
            await send_representation(
                send,
                method=scope["method"],
                headers=headers,
                rep=Representation(
                    size=info.size,
                    # Peaks are a function of the audio and the resolution, both immutable.
                    etag=f'"{recording.sha256[:32]}-peaks-{spp}"',
                    last_modified=recording.created_ms // 1000,
                    content_type="application/json",
                ),
                read=lambda offset, length: vault.store.read_range(key, offset, length),
                extra_headers=cors_headers,
                gone=gone,
            )
        finally:
            gone.close()

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        headers: dict[str, str],
        cors_headers: Headers,
        resource: str,
        exc: BaseException,
    ) -> None:
        if not isinstance(exc, TapevaultError):
            log.exception("unexpected error authorizing %s", scope["path"])
        elif isinstance(exc, UrlRejected):
            count_refusal(exc.reason)
        status, body = media_error(exc)
        # A refused request served nothing: one record each, not waited for.
        self.ctx.access_log.record(
            AccessEvent(
                action=Action.MEDIA_READ,
                actor=self._actor(scope, headers, None),
                status=status,
                at_ms=now_ms(self.ctx.vault.clock),
                recording_id=resource or None,
                error=body["error"],
            )
        )
        await _send_json(send, status, body, cors_headers, head_only=scope["method"] == "HEAD")

    def _actor(self, scope: Scope, headers: dict[str, str], grant: UrlGrant | None) -> Actor:
        via = grant.via if grant else None
        if grant is not None:
            note_tenant(scope, grant.partner_id)
        return Actor(
            partner_id=grant.partner_id if grant else None,
            # A URL issued through a player link reads as that link's (its id, never a secret).
            kind="signed_url" if via is None else "player_link",
            token_id=via if via is not None else grant.key_id if grant else None,
            client_ip=client_ip(scope),
            user_agent=headers.get("user-agent"),
            request_id=scope_request_id(scope),
        )
