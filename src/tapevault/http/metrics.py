"""``GET /metrics``: the Prometheus exposition, for an admin API key.

The metrics are service-wide totals with no tenant in any label, so they tell a tenant's admin
nothing about another tenant's recordings; an operator who would rather not let tenants' admins
see them at all scrapes the separate listener instead (``TAPEVAULT_METRICS_LISTEN``,
``tapevault.observe.listener``). A scrape is not written to the access log (it reads no
recording or session); a refused one is, as an ``auth.failure``, like every refused credential.

The exposition reads files (several processes) and maybe the database, so it is built in a
thread: the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.clock import now_ms
from tapevault.core.model import KeyRole
from tapevault.errors import AuthError, Forbidden
from tapevault.http.asgi import (
    NO_STORE,
    Receive,
    Scope,
    Send,
    client_ip,
    refuse_unless_read,
    request_headers,
    request_id,
    send_json,
)
from tapevault.http.context import AppContext
from tapevault.http.errors import code_message_error
from tapevault.observe.exposition import CONTENT_TYPE, DatabaseGauges, render

log = logging.getLogger("tapevault.metrics")

PATH = "/metrics"


class MetricsEndpoint:
    def __init__(self, ctx: AppContext, database: DatabaseGauges | None) -> None:
        self.ctx = ctx
        self.database = database

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await refuse_unless_read(scope, send):
            return
        headers = request_headers(scope)
        actor = Actor(
            kind="api_key",
            client_ip=client_ip(scope),
            user_agent=headers.get("user-agent"),
            request_id=request_id(headers),
        )
        try:
            caller = await self.ctx.metadata(self.ctx.api_keys.verify, headers.get("authorization"))
            actor = replace(actor, partner_id=caller.tenant.partner_id, token_id=caller.key.key_id)
            caller.require(KeyRole.ADMIN)
        except Exception as exc:
            status, body, extra = code_message_error(exc)
            if isinstance(exc, AuthError | Forbidden):
                self.ctx.access_log.record(
                    AccessEvent(
                        action=Action.AUTH_FAILURE,
                        actor=actor,
                        status=status,
                        at_ms=now_ms(self.ctx.vault.clock),
                        error=exc.message,
                    )
                )
            await send_json(send, status, body, extra, head_only=scope["method"] == "HEAD")
            return
        await send_exposition(self.ctx, self.database, scope, send)


async def send_exposition(
    ctx: AppContext, database: DatabaseGauges | None, scope: Scope, send: Send
) -> None:
    try:
        body = await ctx.blocking(render, database)
    except Exception:
        log.exception("the metrics could not be collected")
        await send_json(
            send,
            503,
            {"code": 503, "message": "The metrics could not be collected; the log says why."},
            [(b"retry-after", b"5")],
            head_only=scope["method"] == "HEAD",
        )
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", CONTENT_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                NO_STORE,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
