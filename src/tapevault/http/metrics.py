"""``GET /metrics``: the Prometheus exposition, for an admin API key.

The metrics are service-wide totals with no tenant in any label, so they tell a tenant's admin
nothing about another tenant's recordings; an operator who would rather not let tenants' admins
see them at all scrapes the separate listener instead (``TAPEVAULT_METRICS_LISTEN``,
``tapevault.observe.listener``). A scrape is not written to the access log (it reads no
recording or session); a refused one is, as an ``auth.failure``, like every refused credential.

The key is looked up in the database, and a scrape is most wanted while the database is down:
so a key that proved an admin's within ``OUTAGE_GRACE_SECONDS`` is still let in while the
database cannot be reached (``DatabaseUnavailable``), and only then. Nothing but aggregate counts
is behind it, and a key revoked meanwhile is refused as soon as the database answers again.

The exposition reads files (several processes) and maybe the database, so it is built in a
thread: the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import replace

from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.clock import now_ms
from tapevault.core.model import KeyRole
from tapevault.errors import AuthError, DatabaseUnavailable, Forbidden
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
OUTAGE_GRACE_SECONDS = 3600.0
_REMEMBERED = 64  # admin keys remembered for an outage (a scraper or two use one each)


class MetricsEndpoint:
    def __init__(self, ctx: AppContext, database: DatabaseGauges | None) -> None:
        self.ctx = ctx
        self.database = database
        # sha256 of an Authorization header that verified as an admin's -> monotonic time
        self._admins: dict[bytes, float] = {}

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
        except DatabaseUnavailable as exc:
            if self._remembered(headers.get("authorization")):
                await send_exposition(self.ctx, self.database, scope, send)
                return
            status, body, extra = code_message_error(exc)
            await send_json(send, status, body, extra, head_only=scope["method"] == "HEAD")
            return
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
        self._remember(headers.get("authorization"))
        await send_exposition(self.ctx, self.database, scope, send)

    def _remember(self, authorization: str | None) -> None:
        if authorization is None:
            return
        if len(self._admins) >= _REMEMBERED:
            self._admins.pop(min(self._admins, key=self._admins.__getitem__))
        self._admins[hashlib.sha256(authorization.encode()).digest()] = time.monotonic()

    def _remembered(self, authorization: str | None) -> bool:
        if authorization is None:
            return False
        seen = self._admins.get(hashlib.sha256(authorization.encode()).digest())
        return seen is not None and time.monotonic() - seen < OUTAGE_GRACE_SECONDS


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
