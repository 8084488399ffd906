"""The native API's webhook endpoints (admin keys of the tenant), in tapevault's error shape.

    POST   /api/v1/webhooks                                   register; the secret, this once
    GET    /api/v1/webhooks                                   the tenant's endpoints (no secrets)
    GET    /api/v1/webhooks/{webhook_id}                      one endpoint
    DELETE /api/v1/webhooks/{webhook_id}                      remove it and its delivery log
    POST   /api/v1/webhooks/{webhook_id}/rotate-secret        a new secret; the old one signs
                                                              too for 24 hours
    GET    /api/v1/webhooks/{webhook_id}/deliveries           its delivery log, newest first
    POST   /api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay
                                                              send that event again

Another tenant's endpoint or delivery is "not found", exactly like one that never existed.
"""

from __future__ import annotations

from typing import Any

from tapevault.auth.workspace import KeyCaller
from tapevault.core.access import Action
from tapevault.core.webhooks import Delivery, Endpoint, parse_registration
from tapevault.errors import InvalidRequest
from tapevault.http.admin import AdminDialect, json_object
from tapevault.http.context import AppContext
from tapevault.http.endpoint import Endpoint as Route
from tapevault.http.endpoint import Handler, Reply, Request
from tapevault.http.native import instant
from tapevault.numbers import is_digits

MAX_PAGE = 200
_CURSOR_MAX = 64


def endpoint_body(e: Endpoint, *, secret: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": e.endpoint_id,
        "url": e.url,
        "description": e.description,
        "events": list(e.event_types),
        "created_at": instant(e.created_ms),
        "enabled": e.disabled_ms is None,
        "disabled_at": instant(e.disabled_ms),
        "disabled_reason": e.disabled_reason,
        "previous_secret_valid_until": instant(e.previous_until_ms),
    }
    if secret:
        body["secret"] = e.secret
    return body


def delivery_body(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.delivery_id,
        "webhook_id": d.endpoint_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "session_id": d.session_id,
        "status": d.status.value,
        "attempts": d.attempts,
        "next_attempt_at": instant(d.next_attempt_ms) if d.status.value == "pending" else None,
        "last_attempt_at": instant(d.last_attempt_ms),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "delivered_at": instant(d.delivered_ms),
        "created_at": instant(d.created_ms),
    }


def _page(query: dict[str, str]) -> tuple[int, str | None]:
    unknown = sorted(set(query) - {"limit", "cursor"})
    if unknown:
        raise InvalidRequest(f"Unknown parameter {unknown[0][:40]!r}; send limit or cursor.")
    limit_text = query.get("limit", "50")
    if not is_digits(limit_text) or not 1 <= int(limit_text) <= MAX_PAGE:
        raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE}.")
    cursor = query.get("cursor")
    if cursor is not None and (not cursor or len(cursor) > _CURSOR_MAX or not cursor.isascii()):
        raise InvalidRequest("cursor must be the next_cursor of a previous page.")
    return int(limit_text), cursor


def handlers(ctx: AppContext) -> dict[str, Handler[KeyCaller]]:
    service = ctx.webhooks

    async def collection(request: Request, caller: KeyCaller) -> Reply:
        partner = caller.tenant.partner_id
        if request.scope["method"] == "POST":
            registration = parse_registration(await json_object(request))
            # Resolves the URL's host (the SSRF check): a thread, whatever the database.
            created = await ctx.blocking(service.register, partner, registration)
            body = endpoint_body(created, secret=True)
            return Reply(201, body, detail={"id": created.endpoint_id})
        found = await ctx.metadata(service.store.list_endpoints, partner)
        return Reply(200, {"webhooks": [endpoint_body(e) for e in found]})

    async def one(request: Request, caller: KeyCaller) -> Reply:
        partner, webhook_id = caller.tenant.partner_id, request.param("webhook_id")
        if request.scope["method"] == "DELETE":
            await ctx.metadata(service.remove, partner, webhook_id)
            return Reply(204, detail={"id": webhook_id})
        found = await ctx.metadata(service.get, partner, webhook_id)
        return Reply(200, endpoint_body(found))

    async def rotate(request: Request, caller: KeyCaller) -> Reply:
        webhook_id = request.param("webhook_id")
        rotated = await ctx.metadata(service.rotate, caller.tenant.partner_id, webhook_id)
        return Reply(200, endpoint_body(rotated, secret=True), detail={"id": webhook_id})

    async def deliveries(request: Request, caller: KeyCaller) -> Reply:
        limit, cursor = _page(request.query)
        found = await ctx.metadata(
            service.deliveries, caller.tenant.partner_id, request.param("webhook_id"), limit, cursor
        )
        body = {
            "deliveries": [delivery_body(d) for d in found],
            "next_cursor": found[-1].delivery_id if len(found) == limit else None,
        }
        return Reply(200, body)

    async def replay(request: Request, caller: KeyCaller) -> Reply:
        webhook_id, delivery_id = request.param("webhook_id"), request.param("delivery_id")
        made = await ctx.metadata(service.replay, caller.tenant.partner_id, webhook_id, delivery_id)
        return Reply(202, delivery_body(made), detail={"id": webhook_id, "replayed": delivery_id})

    return {
        "collection": collection,
        "one": one,
        "rotate": rotate,
        "deliveries": deliveries,
        "replay": replay,
    }


def routes(ctx: AppContext) -> list[tuple[str, Route[KeyCaller]]]:
    admin = AdminDialect(ctx)
    h = handlers(ctx)
    base = "/api/v1/webhooks"
    return [
        (
            base,
            Route(
                ctx,
                admin,
                ["GET", "POST"],
                h["collection"],
                {"GET": Action.WEBHOOK_LIST, "POST": Action.WEBHOOK_CREATE},
            ),
        ),
        (
            f"{base}/{{webhook_id}}",
            Route(
                ctx,
                admin,
                ["GET", "DELETE"],
                h["one"],
                {"GET": Action.WEBHOOK_READ, "DELETE": Action.WEBHOOK_DELETE},
            ),
        ),
        (
            f"{base}/{{webhook_id}}/rotate-secret",
            Route(ctx, admin, ["POST"], h["rotate"], Action.WEBHOOK_ROTATE),
        ),
        (
            f"{base}/{{webhook_id}}/deliveries",
            Route(ctx, admin, ["GET"], h["deliveries"], Action.WEBHOOK_DELIVERIES),
        ),
        (
            f"{base}/{{webhook_id}}/deliveries/{{delivery_id}}/replay",
            Route(ctx, admin, ["POST"], h["replay"], Action.WEBHOOK_REPLAY),
        ),
    ]
