"""The Kore.ai dialect: fetch call recording v2 (kore-fetch-call-recording-v2.md).

``GET /api/public/bot/{botId}/v2/recordings?sessionId=...&userId=...`` with the app's JWT in the
``auth`` header. ``sessionId`` names any session of the tenant: an ambient or form-filling session
id, or a call's SID. The answer is the session's merged rendition (every channel or segment mixed
on one timeline, see core/renditions.py) as Kore's ``recording`` list.

Every recording status is a 200 whose body says it; ``Retry-After`` tells when to ask again:

    success            the merged file is ready: one entry with fileName and a signed fileUrl
    call_in_progress   audio is still arriving (a live call or stream)          Retry-After: 5
    media_in_progress  the call ended; recordings or the merged file are being made  Retry-After: 2
    media_unavailable  no such session, no audio, or past retention
    failed             processing failed ("message" says why)

Request errors use Kore's platform error shape ``{"errors": [{"msg": "...", "code": N}]}``:
400 a missing ``sessionId``, 401 a missing or invalid JWT, 404 a ``botId`` that is not the app's
(an unknown bot and another tenant's bot get the same answer), 405 another method.
"""

from __future__ import annotations

from typing import Any

from tapevault.auth.kore import KoreCaller
from tapevault.core.access import Action, Actor
from tapevault.core.renditions import MergeState
from tapevault.errors import (
    AuthError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    TapevaultError,
    Unavailable,
)
from tapevault.http.context import AppContext
from tapevault.http.endpoint import Endpoint, Handler, Headers, Reply, Request, with_caller
from tapevault.http.wording import say

STATUS = {
    MergeState.READY: "success",
    MergeState.RECEIVING: "call_in_progress",
    MergeState.PROCESSING: "media_in_progress",
    MergeState.NONE: "media_unavailable",
    MergeState.FAILED: "failed",
}
RETRY_AFTER = {MergeState.RECEIVING: 5, MergeState.PROCESSING: 2}
BOT_NOT_FOUND = "Bot not found."


def kore_error(exc: BaseException) -> tuple[int, Any, Headers]:
    """The one place where tapevault errors become Kore answers."""
    headers: Headers = []
    match exc:
        case MethodNotAllowed(allowed=allowed):
            headers.append((b"allow", ", ".join(allowed).encode()))
            status = 405
        case AuthError():
            status = 401
        case InvalidRequest():
            status = 400
        case NotFound():
            status = 404
        case Unavailable():
            status = 503
        case _:
            status = 500
    message = say(exc) if isinstance(exc, TapevaultError) and status != 500 else "Internal error."
    return status, {"errors": [{"msg": message, "code": status}]}, headers


class KoreDialect:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def authenticate(self, request: Request) -> KoreCaller:
        return self.ctx.kore_tokens.verify(request.headers.get("auth"))

    def actor(self, caller: KoreCaller, request: Request) -> Actor:
        return with_caller(
            request.actor,
            partner_id=caller.tenant.partner_id,
            kind="kore_jwt",
            token_id=caller.token_id,
            provider_id=request.query.get("userId", "")[:200] or None,
        )

    def error(self, exc: BaseException) -> tuple[int, Any, Headers]:
        return kore_error(exc)


def _recordings(ctx: AppContext) -> Handler[KoreCaller]:
    async def recordings(request: Request, caller: KoreCaller) -> Reply:
        if request.param("bot_id") != caller.tenant.bot_id:
            raise NotFound(BOT_NOT_FOUND)
        session_id = request.query.get("sessionId", "")
        if not session_id:
            raise InvalidRequest("sessionId is required.")
        answer = await ctx.metadata(ctx.renditions.merged, caller.tenant, session_id)
        body: dict[str, Any] = {"status": STATUS[answer.state], "recording": []}
        if answer.link is not None:
            body["recording"] = [
                {"fileName": f"{session_id}-merged.wav", "fileUrl": answer.link.url}
            ]
        if answer.state is MergeState.FAILED:
            body["message"] = answer.reason or "processing failed"
        headers: Headers = []
        if answer.state in RETRY_AFTER:
            headers.append((b"retry-after", str(RETRY_AFTER[answer.state]).encode()))
        return Reply(
            200,
            body,
            headers,
            session_id=answer.session.session_id if answer.session else None,
            recording_id=answer.link.recording.recording_id if answer.link else None,
            mode=ctx.vault.direct.access_mode(caller.tenant, "stream"),
            detail={"status": body["status"]},
        )

    return recordings


def routes(ctx: AppContext) -> list[tuple[str, Endpoint[KoreCaller]]]:
    return [
        (
            "/api/public/bot/{bot_id}/v2/recordings",
            Endpoint(ctx, KoreDialect(ctx), ["GET"], _recordings(ctx), Action.MERGED_URLS),
        )
    ]
