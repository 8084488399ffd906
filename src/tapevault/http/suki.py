"""The Suki dialect: ambient / form-filling sessions and their recording URLs.

A thin adapter: it authenticates ``sdp_suki_token``, turns the request into one ``Vault`` call and
the result (or error) into Suki's wire format, ``{"code": <int>, "message": "..."}`` for errors
(suki-form-filling-session-recording.md). Errors become HTTP in ``suki_error`` and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tapevault.auth.suki import SukiCaller
from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.clock import now_ms
from tapevault.core.lifecycle import session_status
from tapevault.core.model import Recording, Session, SessionKind, Tenant
from tapevault.errors import AuthError, InvalidRequest
from tapevault.http.context import AppContext
from tapevault.http.endpoint import Endpoint, Handler, Headers, Reply, Request, with_caller
from tapevault.http.errors import code_message_error
from tapevault.http.stream import issue_ticket
from tapevault.http.tus import TusEndpoint, TusEvent
from tapevault.http.uploads import accept_file, declared_length, drain, receive_upload
from tapevault.ingest.tus_store import TusStore

_BOOL = {"true": True, "1": True, "false": False, "0": False}
_SMALL_BODY = 64 * 1024


def suki_error(exc: BaseException) -> tuple[int, dict[str, Any], Headers]:
    """The one place where tapevault errors become Suki HTTP answers."""
    return code_message_error(exc)


class SukiDialect:
    """``sdp_suki_token`` credentials and ``{"code", "message"}`` errors."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def authenticate(self, request: Request) -> SukiCaller:
        return self.ctx.suki_tokens.verify(
            request.headers.get("sdp_suki_token"), request.headers.get("sdp_provider_id")
        )

    def actor(self, caller: SukiCaller, request: Request) -> Actor:
        return with_caller(
            request.actor,
            partner_id=caller.partner.partner_id,
            kind="suki_token",
            provider_id=caller.provider_id,
            token_id=caller.token_id,
        )

    def error(self, exc: BaseException) -> tuple[int, Any, Headers]:
        return suki_error(exc)


# --- handlers ------------------------------------------------------------------------------------


def _create(ctx: AppContext, kind: SessionKind) -> Handler[SukiCaller]:
    async def create(request: Request, caller: SukiCaller) -> Reply:
        await drain(request.receive, _SMALL_BODY)
        session = await ctx.metadata(
            ctx.vault.sessions.create_session, caller.partner, kind, caller.provider_id
        )
        body = {"ambient_session_id": session.session_id}
        return Reply(201, body, session_id=session.session_id)

    return create


def _get_session(ctx: AppContext) -> Handler[SukiCaller]:
    async def get_session(request: Request, caller: SukiCaller) -> Reply:
        session, recordings = await ctx.metadata(
            ctx.vault.sessions.session_with_recordings, caller.partner, request.param("session_id")
        )
        return Reply(200, session_body(session, recordings))

    return get_session


def _end_session(ctx: AppContext) -> Handler[SukiCaller]:
    async def end_session(request: Request, caller: SukiCaller) -> Reply:
        await drain(request.receive, _SMALL_BODY)
        session_id = request.param("session_id")
        await ctx.metadata(ctx.vault.sessions.end_session, caller.partner, session_id)
        session, recordings = await ctx.metadata(
            ctx.vault.sessions.session_with_recordings, caller.partner, session_id
        )
        return Reply(200, session_body(session, recordings))

    return end_session


def _recording_urls(ctx: AppContext) -> Handler[SukiCaller]:
    async def recording_urls(request: Request, caller: SukiCaller) -> Reply:
        download = _parse_download(request.query.get("download"))
        links = await ctx.hot(
            ctx.vault.links.recording_links, caller.partner, request.param("session_id"), download
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
        mode = ctx.vault.direct.access_mode(caller.partner, "download" if download else "stream")
        return Reply(200, body, mode=mode)

    return recording_urls


def _upload_audio(ctx: AppContext) -> Handler[SukiCaller]:
    async def upload_audio(request: Request, caller: SukiCaller) -> Reply:
        """Spool the body, check it is audio we can read, and acknowledge it (202).

        The recording is PROCESSING until a worker has decoded and stored it; the answer says
        so, and the session's status shows when it is available.
        """
        session_id = request.param("session_id")
        # Check before reading the body, so a client streaming to an ended session (or past its
        # storage quota) learns at once.
        await ctx.metadata(ctx.vault.sessions.check_accepts_audio, caller.partner, session_id)
        room = max(1, declared_length(request.headers))
        await ctx.metadata(ctx.vault.quotas.check, caller.partner, room)
        recording = await receive_upload(
            ctx,
            request.receive,
            request.headers,
            lambda path, fmt: ctx.vault.ingest.accept_upload(caller.partner, session_id, path, fmt),
        )
        return Reply(202, recording_body(recording), recording_id=recording.recording_id)

    return upload_audio


def _stream_ticket(ctx: AppContext) -> Handler[SukiCaller]:
    async def stream_ticket(request: Request, caller: SukiCaller) -> Reply:
        await drain(request.receive, _SMALL_BODY)
        ticket = await ctx.metadata(issue_ticket, ctx, caller, request.param("session_id"))
        return Reply(201, ticket)

    return stream_ticket


def tus_endpoint(ctx: AppContext) -> TusEndpoint:
    """Resumable uploads (tus 1.0) at ``/api/v1/uploads``; a finished upload is accepted exactly
    like a plain one. The metadata must name the ``session_id``."""

    async def authenticate(headers: dict[str, str]) -> str:
        caller = await ctx.metadata(
            ctx.suki_tokens.verify, headers.get("sdp_suki_token"), headers.get("sdp_provider_id")
        )
        return caller.partner.partner_id

    async def partner(owner: str) -> Tenant:
        found = await ctx.metadata(ctx.vault.tenants.get_tenant, owner)
        if found is None:
            raise AuthError("Invalid authentication credentials.")
        return found

    async def validate(owner: str, metadata: dict[str, str]) -> None:
        await ctx.metadata(
            ctx.vault.sessions.check_accepts_audio, await partner(owner), metadata["session_id"]
        )

    async def on_complete(
        owner: str, upload_id: str, data: Path, metadata: dict[str, str]
    ) -> dict[str, Any]:
        tenant = await partner(owner)
        session_id = metadata["session_id"]
        recording = await accept_file(
            ctx,
            data,
            metadata.get("filetype"),
            lambda path, fmt: ctx.vault.ingest.accept_upload(tenant, session_id, path, fmt),
        )
        return recording_body(recording)

    def on_event(event: TusEvent) -> None:
        ctx.access_log.record(
            AccessEvent(
                action=Action.AUTH_FAILURE if event.status == 401 else Action.RECORDING_UPLOAD,
                actor=Actor(
                    partner_id=event.owner,
                    kind="suki_token",
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


def routes(ctx: AppContext) -> list[tuple[str, Endpoint[SukiCaller]]]:
    """(path, endpoint) pairs for the router."""
    suki = SukiDialect(ctx)

    def endpoint(method: str, handler: Handler[SukiCaller], action: Action) -> Endpoint[SukiCaller]:
        return Endpoint(ctx, suki, [method], handler, action)

    return [
        # The hot path first: the router tries routes in order.
        (
            "/api/v1/ambient/session/{session_id}/recording",
            endpoint("GET", _recording_urls(ctx), Action.URLS_ISSUE),
        ),
        (
            "/api/v1/ambient/session/create",
            endpoint("POST", _create(ctx, SessionKind.AMBIENT), Action.SESSION_CREATE),
        ),
        (
            "/api/v1/form-filling/session/create",
            endpoint("POST", _create(ctx, SessionKind.FORM_FILLING), Action.SESSION_CREATE),
        ),
        (
            "/api/v1/ambient/session/{session_id}/audio",
            endpoint("POST", _upload_audio(ctx), Action.RECORDING_UPLOAD),
        ),
        (
            "/api/v1/ambient/session/{session_id}/stream-ticket",
            endpoint("POST", _stream_ticket(ctx), Action.STREAM_TICKET),
        ),
        (
            "/api/v1/ambient/session/{session_id}/end",
            endpoint("POST", _end_session(ctx), Action.SESSION_END),
        ),
        (
            "/api/v1/ambient/session/{session_id}",
            endpoint("GET", _get_session(ctx), Action.SESSION_READ),
        ),
    ]
