"""Player links over HTTP: made and revoked with the native API (or a Suki token), opened by
the player page with the link's secret.

    POST   /api/v1/sessions/{id}/player-links     {"ttl": "12h"} (optional) -> 201 the link
    GET    /api/v1/sessions/{id}/player-links     the session's links (never their secrets)
    DELETE /api/v1/player-links/{link_id}         revoke: the page shows "revoked" from then on
    GET    /api/v1/ambient/session/{id}/player    the same as POST, with Suki's credentials
    GET    /player/{link_id}/playlist             X-Player-Key: the secret -> the timeline

The secret travels in the link's fragment (``#k=``), which browsers never send to any server;
the page's script reads it and sends it in a header to this server only, and the page's
``Referrer-Policy: no-referrer`` keeps even the link id from other origins. Errors are in the
native ``{"code", "message"}`` shape, with ``reason`` on a 410 for the page to word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tapevault.auth.suki import SukiCaller
from tapevault.auth.workspace import KeyCaller
from tapevault.config import Settings
from tapevault.core import policy
from tapevault.core.access import Action, Actor
from tapevault.core.model import PlayerLink, Recording, Tenant
from tapevault.core.playerlinks import PlayerLinkRepository, PlayerLinks, Playlist
from tapevault.core.renditions import Renditions
from tapevault.core.signing import UrlMode
from tapevault.core.vault import Vault
from tapevault.errors import InvalidRequest, NotFound
from tapevault.http.admin import NativeDialect, json_object
from tapevault.http.context import AppContext
from tapevault.http.endpoint import Endpoint, Headers, Reply, Request, with_caller
from tapevault.http.errors import code_message_error
from tapevault.http.native import instant
from tapevault.http.suki import SukiDialect

KEY_HEADER = "x-player-key"
_MAX_JSON = 4096


def service(
    repo: PlayerLinkRepository, vault: Vault, renditions: Renditions, settings: Settings
) -> PlayerLinks:
    """The player links service, wired once at start-up (``runtime``)."""

    def sign(
        recording: Recording, mode: UrlMode, expires: int, held: bool, via: str
    ) -> tuple[str, int]:
        link = vault.links.link(recording, mode, expires, held=held, via=via)
        return link.url, link.expires_at

    def merged(tenant: Tenant, session_id: str) -> Recording | None:
        answer = renditions.merged(tenant, session_id)
        return None if answer.link is None else answer.link.recording

    def peaks(
        tenant: Tenant, recording: Recording, expires_at: int, held: bool, via: str
    ) -> str | None:
        return vault.links.peaks_link(tenant, recording, expires_at, held=held, via=via)

    return PlayerLinks(
        repo,
        vault.clock,
        sign,
        peaks,
        media_seconds=settings.player_media_seconds,
        merge=merged,
    )


@dataclass(frozen=True, slots=True)
class LinkCaller:
    """Whoever holds a link's secret: the link and its tenant."""

    link: PlayerLink
    tenant: Tenant


class PlayerDialect:
    """The credential is the link's secret in ``X-Player-Key``; errors in the native shape."""

    def __init__(self, links: PlayerLinks, ctx: AppContext) -> None:
        self.links = links
        self.tenants = ctx.vault.tenants

    def authenticate(self, request: Request) -> LinkCaller:
        link = self.links.open(request.param("link_id"), request.headers.get(KEY_HEADER, ""))
        tenant = self.tenants.get_tenant(link.partner_id)
        if tenant is None:
            raise NotFound("No such player link.")
        return LinkCaller(link, tenant)

    def actor(self, caller: LinkCaller, request: Request) -> Actor:
        return with_caller(
            request.actor,
            partner_id=caller.link.partner_id,
            kind="player_link",
            token_id=caller.link.link_id,
        )

    def error(self, exc: BaseException) -> tuple[int, Any, Headers]:
        return code_message_error(exc)


def _ttl(body: dict[str, Any]) -> int | None:
    value = body.get("ttl")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 20:
        raise InvalidRequest('ttl must be a duration such as "12h" or "7d".')
    return policy.parse_duration(value)


async def _body(request: Request) -> dict[str, Any]:
    body = await json_object(request, _MAX_JSON)
    unknown = sorted(set(body) - {"ttl"})
    if unknown:
        raise InvalidRequest(f"Unknown field {unknown[0][:40]!r}; the only field is ttl.")
    return body


def link_body(link: PlayerLink) -> dict[str, Any]:
    return {
        "link_id": link.link_id,
        "session_id": link.session_id,
        "created_at": instant(link.created_ms),
        "expires_at": instant(link.expires_ms),
        "revoked_at": instant(link.revoked_ms),
    }


def playlist_body(playlist: Playlist, now_s: int) -> dict[str, Any]:
    return {
        "link_id": playlist.link.link_id,
        "session_id": playlist.session.session_id,
        "kind": playlist.session.kind.value,
        "link_expires_at": playlist.link.expires_ms // 1000,
        "server_time": now_s,  # the page times renewals by this clock, not the viewer's
        "duration_ms": playlist.duration_ms,
        "tracks": [
            {
                "recording_id": t.recording.recording_id,
                "sequence_number": t.recording.sequence_number,
                "channel": t.recording.channel,
                "offset_ms": t.offset_ms,
                "duration_ms": t.recording.duration_ms,
                "url": t.url,
                "expires_at": t.expires_at,
                "peaks_url": t.peaks_url,
            }
            for t in playlist.tracks
        ],
    }


def routes(ctx: AppContext) -> list[tuple[str, Endpoint[Any]]]:
    links = ctx.player_links
    public = ctx.settings.public_url.rstrip("/")

    async def made(tenant: Tenant, session_id: str, ttl: int | None) -> Reply:
        session = await ctx.metadata(ctx.retention.session, tenant, session_id)
        link, secret = await ctx.blocking(links.create, tenant, session, ttl)
        body = {**link_body(link), "url": f"{public}/player/{link.link_id}#k={secret}"}
        detail = {"link_id": link.link_id, "expires_ms": link.expires_ms}
        return Reply(
            201,
            body,
            session_id=session.session_id,
            detail=detail,
            action=Action.PLAYER_LINK_CREATE,
        )

    async def session_links(request: Request, caller: KeyCaller) -> Reply:
        if request.scope["method"] == "POST":
            return await made(
                caller.tenant, request.param("session_id"), _ttl(await _body(request))
            )
        session = await ctx.metadata(
            ctx.retention.session, caller.tenant, request.param("session_id")
        )
        found = await ctx.metadata(links.list, caller.tenant, session)
        body = {"session_id": session.session_id, "links": [link_body(k) for k in found]}
        return Reply(200, body, session_id=session.session_id)

    async def revoke(request: Request, caller: KeyCaller) -> Reply:
        link = await ctx.blocking(links.revoke, caller.tenant, request.param("link_id"))
        return Reply(
            200, link_body(link), session_id=link.session_id, detail={"link_id": link.link_id}
        )

    async def suki_player(request: Request, caller: SukiCaller) -> Reply:
        # A GET in Suki's style (its clients GET their URLs): 200, though a link is made.
        reply = await made(caller.partner, request.param("session_id"), None)
        reply.status = 200
        return reply

    async def playlist(request: Request, caller: LinkCaller) -> Reply:
        found = await ctx.metadata(links.playlist, caller.tenant, caller.link)
        now_s = int(ctx.vault.clock.now())
        return Reply(
            200,
            playlist_body(found, now_s),
            headers=[(b"referrer-policy", b"no-referrer")],
            session_id=found.session.session_id,
            detail={"recordings": [t.recording.recording_id for t in found.tracks][:50]},
        )

    native = NativeDialect(ctx)
    return [
        (
            "/api/v1/sessions/{session_id}/player-links",
            Endpoint(
                ctx,
                native,
                ["GET", "POST"],
                session_links,
                {"GET": Action.PLAYER_LINK_LIST, "POST": Action.PLAYER_LINK_CREATE},
            ),
        ),
        (
            "/api/v1/player-links/{link_id}",
            Endpoint(ctx, native, ["DELETE"], revoke, Action.PLAYER_LINK_REVOKE),
        ),
        (
            "/api/v1/ambient/session/{session_id}/player",
            Endpoint(ctx, SukiDialect(ctx), ["GET"], suki_player, Action.PLAYER_LINK_CREATE),
        ),
        (
            "/player/{link_id}/playlist",
            Endpoint(ctx, PlayerDialect(links, ctx), ["GET"], playlist, Action.PLAYER_PLAYLIST),
        ),
    ]
