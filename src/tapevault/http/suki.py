"""The Suki dialect: ambient / form-filling sessions and their recording URLs.

A thin adapter: it authenticates ``sdp_suki_token``, turns the request into one ``Vault`` call and
the result (or error) into Suki's wire format, ``{"code": <int>, "message": "..."}`` for errors
(suki-form-filling-session-recording.md). Errors become HTTP in ``suki_error`` and nowhere else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from tapevault.auth.suki import SukiCaller
from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.clock import now_ms
from tapevault.core.lifecycle import session_status
from tapevault.core.model import Partner, Recording, Session, SessionKind
from tapevault.errors import (
    AuthError,
    InvalidRequest,
    PayloadTooLarge,
    TapevaultError,
)
from tapevault.http.asgi import (
    Receive,
    Scope,
    Send,
    client_ip,
    query_params,
    request_headers,
    request_id,
    send_json,
)
from tapevault.http.context import AppContext
from tapevault.http.errors import code_message_error
from tapevault.http.stream import issue_ticket
from tapevault.http.tus import TusEndpoint, TusEvent
from tapevault.ingest import formats
from tapevault.ingest.tus_store import TusStore

log = logging.getLogger("tapevault.http")

_BOOL = {"true": True, "1": True, "false": False, "0": False}

Handler = Callable[[AppContext, Scope, Receive, Send, SukiCaller], Awaitable[int]]


def suki_error(exc: BaseException) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
    """The one place where tapevault errors become Suki HTTP answers."""
    return code_message_error(exc)


class SukiEndpoint:
    """A raw ASGI endpoint: method check, authentication, error mapping, access record."""

    def __init__(
        self, ctx: AppContext, methods: Sequence[str], handler: Handler, action: Action
    ) -> None:
        self.ctx = ctx
        self.methods = tuple(methods)
        self.handler = handler
        self.action = action

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in self.methods:
            allow = ", ".join(self.methods).encode()
            await send_json(
                send,
                405,
                {"code": 405, "message": f"Method {method} not allowed."},
                [(b"allow", allow)],
            )
            return
        headers = request_headers(scope)
        actor = Actor(
            provider_id=headers.get("sdp_provider_id"),
            client_ip=client_ip(scope),
            user_agent=headers.get("user-agent"),
            request_id=request_id(headers),
        )
        session_id = scope.get("path_params", {}).get("session_id")
        try:
            caller = await self.ctx.metadata(
                self.ctx.suki_tokens.verify,
                headers.get("sdp_suki_token"),
                headers.get("sdp_provider_id"),
            )
        except AuthError as exc:
            self._record(Action.AUTH_FAILURE, actor, 401, session_id, str(exc.message))
            status, body, extra = suki_error(exc)
            await send_json(send, status, body, extra)
            return
        actor = Actor(
            partner_id=caller.partner.partner_id,
            provider_id=caller.provider_id,
            token_id=caller.token_id,
            client_ip=actor.client_ip,
            user_agent=actor.user_agent,
            request_id=actor.request_id,
        )
        try:
            status = await self.handler(self.ctx, scope, receive, send, caller)
        except Exception as exc:
            if not isinstance(exc, TapevaultError):
                log.exception("unexpected error in %s %s", method, scope.get("path"))
            status, body, extra = suki_error(exc)
            self._record(self.action, actor, status, session_id, type(exc).__name__)
            await send_json(send, status, body, extra)
            return
        self._record(self.action, actor, status, session_id, None)

    def _record(
        self, action: Action, actor: Actor, status: int, session_id: str | None, error: str | None
    ) -> None:
        self.ctx.access_log.record(
            AccessEvent(
                action=action,
                actor=actor,
                status=status,
                at_ms=now_ms(self.ctx.vault.clock),
                session_id=session_id,
                error=error,
            )
        )


# --- handlers: each returns the status it sent -------------------------------------------------


def _create(kind: SessionKind) -> Handler:
    async def create(
        ctx: AppContext, scope: Scope, receive: Receive, send: Send, caller: SukiCaller
    ) -> int:
        await _drain(receive, limit=64 * 1024)
        session = await ctx.metadata(ctx.vault.create_session, caller.partner, kind)
        await send_json(send, 201, {"ambient_session_id": session.session_id})
        return 201

    return create


async def get_session(
    ctx: AppContext, scope: Scope, receive: Receive, send: Send, caller: SukiCaller
) -> int:
    session, recordings = await ctx.metadata(
        ctx.vault.session_with_recordings, caller.partner, scope["path_params"]["session_id"]
    )
    await send_json(send, 200, session_body(session, recordings))
    return 200


async def end_session(
    ctx: AppContext, scope: Scope, receive: Receive, send: Send, caller: SukiCaller
) -> int:
    await _drain(receive, limit=64 * 1024)
    session_id = scope["path_params"]["session_id"]
    await ctx.metadata(ctx.vault.end_session, caller.partner, session_id)
    session, recordings = await ctx.metadata(
        ctx.vault.session_with_recordings, caller.partner, session_id
    )
    await send_json(send, 200, session_body(session, recordings))
    return 200


async def get_recording_urls(
    ctx: AppContext, scope: Scope, receive: Receive, send: Send, caller: SukiCaller
) -> int:
    download = _parse_download(query_params(scope).get("download"))
    links = await ctx.metadata(
        ctx.vault.recording_links,
        caller.partner,
        scope["path_params"]["session_id"],
        download,
    )
    body = {
        "recordings": [
            {
                "recording_id": link.recording.recording_id,
                "presigned_url": link.url,
                "expires_at": link.expires_at,
                "sequence_number": link.recording.sequence_number,
            }
            for link in links
        ],
        "is_streamable": True,
    }
    await send_json(send, 200, body)
    return 200


async def upload_audio(
    ctx: AppContext, scope: Scope, receive: Receive, send: Send, caller: SukiCaller
) -> int:
    """Spool the body, check it is audio we can read, and acknowledge it (202).

    The recording is PROCESSING until a worker has decoded and stored it; the answer says so,
    and the session's status shows when it is available.
    """
    session_id = scope["path_params"]["session_id"]
    headers = request_headers(scope)
    declared = headers.get("content-type")
    limit = ctx.settings.max_upload_bytes
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise InvalidRequest("Content-Length is not a number.")
        if int(length) > limit:
            raise PayloadTooLarge(limit)
    # Check before reading the body, so a client streaming to an ended session learns at once.
    await ctx.metadata(ctx.vault.check_accepts_audio, caller.partner, session_id)
    spooled = await _spool(ctx.spool_dir, receive, limit)
    try:
        recording = await accept_file(ctx, caller.partner, session_id, spooled, declared)
    finally:
        with contextlib.suppress(FileNotFoundError):
            spooled.unlink()
    await send_json(send, 202, recording_body(recording))
    return 202


async def accept_file(
    ctx: AppContext, partner: Partner, session_id: str, path: Path, declared: str | None
) -> Recording:
    """Probe a complete body on disk and take it into the vault (plain and tus uploads)."""
    source_format = await ctx.blocking(formats.probe, path, declared)
    return await ctx.blocking(ctx.vault.accept_upload, partner, session_id, path, source_format)


def tus_endpoint(ctx: AppContext) -> TusEndpoint:
    """Resumable uploads (tus 1.0) at ``/api/v1/uploads``; a finished upload is accepted exactly
    like a plain one. The metadata must name the ``session_id``."""

    async def authenticate(headers: dict[str, str]) -> str:
        caller = await ctx.metadata(
            ctx.suki_tokens.verify, headers.get("sdp_suki_token"), headers.get("sdp_provider_id")
        )
        return caller.partner.partner_id

    async def partner(owner: str) -> Partner:
        found = await ctx.metadata(ctx.vault.repo.get_partner, owner)
        if found is None:
            raise AuthError("Invalid authentication credentials.")
        return found

    async def validate(owner: str, metadata: dict[str, str]) -> None:
        await ctx.metadata(
            ctx.vault.check_accepts_audio, await partner(owner), metadata["session_id"]
        )

    async def on_complete(
        owner: str, upload_id: str, data: Path, metadata: dict[str, str]
    ) -> dict[str, Any]:
        recording = await accept_file(
            ctx, await partner(owner), metadata["session_id"], data, metadata.get("filetype")
        )
        return recording_body(recording)

    def on_event(event: TusEvent) -> None:
        ctx.access_log.record(
            AccessEvent(
                action=Action.AUTH_FAILURE if event.status == 401 else Action.RECORDING_UPLOAD,
                actor=Actor(
                    partner_id=event.owner,
                    client_ip=event.client_ip,
                    user_agent=event.user_agent,
                    request_id=event.request_id,
                ),
                status=event.status,
                at_ms=now_ms(ctx.vault.clock),
                session_id=event.session_id,
                recording_id=event.recording_id,
                mode=f"tus.{event.method.lower()}",
                error=event.error,
            )
        )

    store = TusStore(
        ctx.settings.data_dir / "tus", max_size=ctx.settings.max_upload_bytes, clock=ctx.vault.clock
    )
    return TusEndpoint(
        store,
        authenticate,
        on_complete,
        public_url=ctx.settings.public_url,
        clock=ctx.vault.clock,
        validate=validate,
        on_event=on_event,
    )


async def stream_ticket(
    ctx: AppContext, scope: Scope, receive: Receive, send: Send, caller: SukiCaller
) -> int:
    await _drain(receive, limit=64 * 1024)
    ticket = await ctx.metadata(issue_ticket, ctx, caller, scope["path_params"]["session_id"])
    await send_json(send, 201, ticket)
    return 201


# --- wire shapes ---------------------------------------------------------------------------------


def recording_body(r: Recording) -> dict[str, Any]:
    return {
        "recording_id": r.recording_id,
        "sequence_number": r.sequence_number,
        "status": r.status.value,
        "duration_ms": r.duration_ms,
        "sample_rate": r.sample_rate,
        "channels": r.channels,
        "bits_per_sample": r.bits_per_sample,
        "bytes": r.size_bytes,
        "sha256": r.sha256 or None,
        "source_format": r.source_format,
        "recovered": r.recovered,
        "failure_reason": r.failure_reason,
        "channel": r.channel,
        "media_start_epoch_ms": r.media_start_epoch_ms,
        "created_at": r.created_ms // 1000,
        "expires_at": r.expires_ms // 1000,
    }


def session_body(session: Session, recordings: Sequence[Recording]) -> dict[str, Any]:
    return {
        "ambient_session_id": session.session_id,
        "kind": session.kind.value,
        "external_id": session.external_id,
        "status": session_status(session, recordings).value,
        "created_at": session.created_ms // 1000,
        "ended_at": None if session.ended_ms is None else session.ended_ms // 1000,
        "recordings": [recording_body(r) for r in recordings],
    }


# --- helpers -------------------------------------------------------------------------------------


def _parse_download(value: str | None) -> bool:
    if value is None:
        return False
    parsed = _BOOL.get(value.strip().lower())
    if parsed is None:
        raise InvalidRequest(f"Invalid value for download: {value!r}; use true or false.")
    return parsed


async def _drain(receive: Receive, limit: int) -> None:
    """Read and discard a small body (create/end take none); refuse a large one."""
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        seen += len(message.get("body", b""))
        if seen > limit:
            raise PayloadTooLarge(limit)
        if not message.get("more_body", False):
            return


class ClientGone(TapevaultError):
    """The client disconnected before its body was complete."""


async def _spool(spool_dir: Path, receive: Receive, limit: int) -> Path:
    """Stream the request body to a temporary file, enforcing ``limit`` as it arrives."""
    path = spool_dir / f"{uuid.uuid4().hex}.part"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone("client disconnected during upload")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if not message.get("more_body", False):
                break
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    os.close(fd)
    return path


def routes(ctx: AppContext) -> list[tuple[str, SukiEndpoint]]:
    """(path, endpoint) pairs for the router."""
    return [
        # The hot path first: the router tries routes in order.
        (
            "/api/v1/ambient/session/{session_id}/recording",
            SukiEndpoint(ctx, ["GET"], get_recording_urls, Action.URLS_ISSUE),
        ),
        (
            "/api/v1/ambient/session/create",
            SukiEndpoint(ctx, ["POST"], _create(SessionKind.AMBIENT), Action.SESSION_CREATE),
        ),
        (
            "/api/v1/form-filling/session/create",
            SukiEndpoint(ctx, ["POST"], _create(SessionKind.FORM_FILLING), Action.SESSION_CREATE),
        ),
        (
            "/api/v1/ambient/session/{session_id}/audio",
            SukiEndpoint(ctx, ["POST"], upload_audio, Action.RECORDING_UPLOAD),
        ),
        (
            "/api/v1/ambient/session/{session_id}/stream-ticket",
            SukiEndpoint(ctx, ["POST"], stream_ticket, Action.STREAM_TICKET),
        ),
        (
            "/api/v1/ambient/session/{session_id}/end",
            SukiEndpoint(ctx, ["POST"], end_session, Action.SESSION_END),
        ),
        (
            "/api/v1/ambient/session/{session_id}",
            SukiEndpoint(ctx, ["GET"], get_session, Action.SESSION_READ),
        ),
    ]
