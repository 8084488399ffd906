"""The ASGI application: one outer dispatcher, no middleware stack.

``/media/`` goes straight to the raw gateway (every playback byte passes there); CORS preflights
are answered here for every path; everything else goes through Starlette's router, whose routes
are raw ASGI endpoints. Nothing wraps ``send`` unless a request carries an ``Origin``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from starlette.routing import Route, Router, WebSocketRoute

from tapevault.http.admin import routes as admin_routes
from tapevault.http.amigo import routes as amigo_routes
from tapevault.http.asgi import (
    NO_STORE,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    refuse_unless_read,
    send_fixed,
    send_json,
)
from tapevault.http.context import AppContext
from tapevault.http.cors import Cors
from tapevault.http.health import Health, Ready
from tapevault.http.instrument import instrumented
from tapevault.http.kore import routes as kore_routes
from tapevault.http.limits import LIMITS_STATE, ConnectionLimits
from tapevault.http.media import PREFIX as MEDIA_PREFIX
from tapevault.http.media import MediaGateway
from tapevault.http.metrics import PATH as METRICS_PATH
from tapevault.http.metrics import metrics_endpoint
from tapevault.http.openapi import openapi_document
from tapevault.http.pages import pages
from tapevault.http.playerlinks import routes as player_routes
from tapevault.http.playerpage import player_files
from tapevault.http.requestlog import ROUTE as LOGGED_ROUTE
from tapevault.http.requestlog import logged
from tapevault.http.stream import StreamEndpoint, StreamHub
from tapevault.http.suki import routes as suki_routes
from tapevault.http.suki import tus_endpoint
from tapevault.http.twilio import TwilioMediaStream
from tapevault.http.webhooks import routes as webhook_routes
from tapevault.observe.exposition import DatabaseGauges

log = logging.getLogger("tapevault.http")
STREAMS_STATE = "tapevault.streams"  # lifespan state key of the StreamEndpoint

RECORDING_URLS = "/api/v1/ambient/session/{session_id}/recording"
AMIGO_PREFIX = "/v1/"
KORE_PREFIX = "/api/public/"
_HOT_PREFIX, _HOT_SUFFIX = RECORDING_URLS.split("{session_id}")


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """No route: answered in the error shape of the dialect whose paths it is under, so a client
    of that API can parse it (an id with an encoded "/" lands here)."""
    path: str = scope.get("path", "")
    if path.startswith(AMIGO_PREFIX):
        await send_json(send, 404, {"detail": "Not Found"})
    elif path.startswith(KORE_PREFIX):
        await send_json(send, 404, {"errors": [{"msg": "Not found.", "code": 404}]})
    else:
        await send_json(send, 404, {"code": 404, "message": "Not found."})


class _StaticJson:
    """A fixed JSON document. A class, not a function: Starlette wraps plain functions as
    request/response handlers, and these are raw ASGI endpoints."""

    def __init__(self, body: bytes) -> None:
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            NO_STORE,
        ]
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await refuse_unless_read(scope, send):
            await send_fixed(scope, send, self.headers, self.body)


def build_app(
    ctx: AppContext,
    streams: StreamEndpoint | None = None,
    on_startup: Callable[[], None] | None = None,
    on_shutdown: Callable[[], None] | None = None,
    database_gauges: DatabaseGauges | None = None,
) -> ASGIApp:
    cors = Cors(ctx.settings.cors_origins)
    gateway = MediaGateway(ctx, cors)
    streams = streams or StreamEndpoint(ctx, StreamHub(ctx))
    tus = tus_endpoint(ctx)
    suki = suki_routes(ctx)
    # The recording-URL endpoint is what every player calls: found by two string tests instead
    # of the router's regular expressions (it is also in the router, for completeness).
    recording_urls = dict(suki)[RECORDING_URLS]
    document = openapi_document(ctx.settings.public_url)
    router = Router(
        routes=[
            *(Route(path, endpoint) for path, endpoint in suki),
            *(Route(path, endpoint) for path, endpoint in amigo_routes(ctx)),
            *(Route(path, endpoint) for path, endpoint in kore_routes(ctx)),
            *(Route(path, endpoint) for path, endpoint in admin_routes(ctx)),
            *(Route(path, endpoint) for path, endpoint in player_routes(ctx)),
            *(Route(path, endpoint) for path, endpoint in webhook_routes(ctx)),
            *(Route(path, endpoint) for path, endpoint in player_files()),
            *(Route(path, endpoint) for path, endpoint in tus.routes()),
            WebSocketRoute("/api/v1/ambient/session/{session_id}/stream", streams),
            WebSocketRoute("/twilio/media-stream", TwilioMediaStream(ctx, streams.hub)),
            Route("/healthz", Health(ctx.access_log, streams.hub.copy_health)),
            Route("/readyz", Ready(ctx.readiness)),
            Route(METRICS_PATH, metrics_endpoint(ctx, database_gauges)),
            Route("/openapi.json", _StaticJson(orjson.dumps(document))),
            *(Route(path, page) for path, page in pages(document)),
        ],
        default=_not_found,
    )

    settings = ctx.settings
    limits = ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=float(settings.header_timeout_seconds),
        body_timeout=float(settings.body_timeout_seconds),
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(MEDIA_PREFIX):
                if scope["method"] == "OPTIONS":
                    await _preflight(scope, send, cors)
                    return
                await gateway(scope, receive, send)
                return
            if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
                await _preflight(scope, send, cors)
                return
            origin = _origin(scope)
            if origin is not None:
                send = _with_cors(send, cors.response_headers(origin))
            if path.startswith(_HOT_PREFIX) and path.endswith(_HOT_SUFFIX):
                session_id = path[len(_HOT_PREFIX) : -len(_HOT_SUFFIX)]
                if session_id and "/" not in session_id:
                    scope["path_params"] = {"session_id": session_id}
                    scope[LOGGED_ROUTE] = RECORDING_URLS
                    await recording_urls(scope, receive, send)
                    return
            await router(scope, receive, send)
        elif kind == "websocket":
            await router(scope, receive, send)
        elif kind == "lifespan":
            # The server shares this state with its protocols: how tapevault serve's WebSocket
            # protocol finds the stream endpoint (tapevault.http.wsserver), and its HTTP
            # protocol the connection limits (tapevault.http.httpserver).
            state = scope.get("state", {})
            state[STREAMS_STATE] = streams
            state[LIMITS_STATE] = limits
            await _lifespan(receive, send, on_startup, on_shutdown)

    return logged(instrumented(app, RECORDING_URLS), enabled=settings.request_log)


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _origin(scope: Scope) -> str | None:
    return _header(scope, b"origin")


async def _preflight(scope: Scope, send: Send, cors: Cors) -> None:
    headers = cors.preflight_headers(_origin(scope))
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [*headers, NO_STORE],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def _with_cors(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *headers]
        await send(message)

    return wrapped


async def _lifespan(
    receive: Receive,
    send: Send,
    on_startup: Callable[[], None] | None,
    on_shutdown: Callable[[], None] | None,
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if on_startup is not None:
                on_startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_shutdown is not None:
                on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
