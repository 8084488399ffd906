"""``GET /metrics``: the Prometheus exposition, for an admin API key.

An ``Endpoint`` like every API route (method check, the key checked in the admin dialect, its
errors in tapevault's ``{"code", "message"}`` shape), answering with the text format instead of
JSON. The metrics are service-wide totals with no tenant in any label, so they tell a tenant's
admin nothing about another tenant's recordings; an operator who would rather not let tenants'
admins see them at all scrapes the separate listener (``TAPEVAULT_METRICS_LISTEN``,
``tapevault.observe.listener``). A scrape is not written to the access log (it reads no recording
or session, and comes every few seconds); a refused one is, like every refused credential.

The key is looked up in the database, and a scrape is most wanted while the database is down:
so a key that proved an admin's within ``OUTAGE_GRACE_SECONDS`` is still let in while the
database cannot be reached (``DatabaseUnavailable``), and only then. Nothing but aggregate counts
is behind it, and a key revoked meanwhile is refused as soon as the database answers again.

The exposition reads files (several processes) and maybe the database, so it is built in a
thread: the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time

from tapevault.auth.workspace import KeyCaller
from tapevault.core.access import Action, Actor
from tapevault.errors import DatabaseUnavailable, Unavailable
from tapevault.http.admin import AdminDialect
from tapevault.http.asgi import NO_STORE, Send
from tapevault.http.context import AppContext
from tapevault.http.endpoint import Endpoint, Reply, Request
from tapevault.observe.exposition import CONTENT_TYPE, DatabaseGauges, render

log = logging.getLogger("tapevault.metrics")

PATH = "/metrics"
OUTAGE_GRACE_SECONDS = 3600.0
_REMEMBERED = 64  # admin keys remembered for an outage (a scraper or two use one each)
_HEADERS = [(b"content-type", CONTENT_TYPE.encode()), NO_STORE]


class MetricsDialect(AdminDialect):
    """Admin keys, and the admin keys seen lately while the database is down."""

    def __init__(self, ctx: AppContext) -> None:
        super().__init__(ctx)
        # sha256 of an Authorization header that verified as an admin's -> (when, who)
        self._admins: dict[bytes, tuple[float, KeyCaller]] = {}
        self._lock = threading.Lock()  # authenticate runs in threads on PostgreSQL

    def authenticate(self, request: Request) -> KeyCaller:
        authorization = request.headers.get("authorization", "")
        digest = hashlib.sha256(authorization.encode()).digest()
        try:
            caller = super().authenticate(request)
        except DatabaseUnavailable:
            with self._lock:
                seen = self._admins.get(digest)
            if seen is None or time.monotonic() - seen[0] >= OUTAGE_GRACE_SECONDS:
                raise
            return seen[1]
        with self._lock:
            if digest not in self._admins and len(self._admins) >= _REMEMBERED:
                oldest = min(self._admins, key=lambda d: self._admins[d][0])
                del self._admins[oldest]
            self._admins[digest] = (time.monotonic(), caller)
        return caller


def metrics_endpoint(ctx: AppContext, database: DatabaseGauges | None) -> Endpoint[KeyCaller]:
    exposition = Exposition(ctx, database)

    async def scrape(request: Request, caller: KeyCaller) -> Reply:
        head = request.scope["method"] == "HEAD"

        async def stream(send: Send, actor: Actor) -> None:
            await exposition.send(send, head=head)

        return Reply(200, stream=stream)

    return Endpoint(ctx, MetricsDialect(ctx), ["GET"], scrape, Action.METRICS_READ)


class Exposition:
    """Builds the text in a thread, once for all the scrapes that arrive while it is being
    built: a flood of scrapes costs one build at a time, not one thread each."""

    def __init__(self, ctx: AppContext, database: DatabaseGauges | None) -> None:
        self.ctx = ctx
        self.database = database
        self._building: asyncio.Future[bytes] | None = None

    async def send(self, send: Send, *, head: bool) -> None:
        """The text format; ``Unavailable`` (a 503, nothing sent) if it cannot be collected."""
        building = self._building
        if building is None or building.done():
            building = self._building = asyncio.ensure_future(
                self.ctx.blocking(render, self.database)
            )
        try:
            # Shielded: a scraper that goes away does not cancel the others' build.
            body = await asyncio.shield(building)
        except Exception as exc:
            log.exception("the metrics could not be collected")
            raise Unavailable(
                "The metrics could not be collected; the server log says why."
            ) from exc
        headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})
