"""The Amigo dialect: call recordings by workspace and call SID (amigo-recordings-api.md).

A thin adapter. Workspace API keys arrive as ``Authorization: Bearer``; the key names its
workspace, so a path naming any other workspace (unknown or another tenant's) is answered exactly
like an unknown call: 404. Errors are FastAPI's shapes, since that is what Amigo's clients parse:
``{"detail": "..."}``, and 422 ``HTTPValidationError`` for a malformed parameter. Checks run in
FastAPI's order: credentials (401), then parameter validation (422), then the handler.

Beyond the seed: ``POST /v1/{workspace_id}/calls/{call_sid}/audio?channel=inbound|outbound`` takes
one channel of a call as an upload (the first upload creates the call), and
``/v1/{workspace_id}/api-keys`` creates, lists and revokes the workspace's keys.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from starlette.convertors import Convertor, register_url_convertor

from tapevault.auth.workspace import KeyCaller
from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.calls import CHANNELS, call_metadata, call_recording_off, iso_ms
from tapevault.core.clock import now_ms
from tapevault.core.model import ApiKey, KeyRole, Tenant
from tapevault.core.tenants import MAX_KEY_DAYS, MAX_NAME
from tapevault.errors import InvalidRequest, NotFound, TapevaultError
from tapevault.http.amigo_shapes import metadata_body, metadata_document, urls_body
from tapevault.http.asgi import Send
from tapevault.http.context import AppContext
from tapevault.http.endpoint import Endpoint, Handler, Headers, Reply, Request, with_caller
from tapevault.http.errors import status_of
from tapevault.http.forwarded import came_through_proxy
from tapevault.http.media import serve_document, serve_playback
from tapevault.http.suki import recording_body
from tapevault.http.uploads import declared_length, read_small, receive_upload
from tapevault.http.wording import CALL_NOT_FOUND, say
from tapevault.numbers import is_digits

# The proxied download's own HTTP errors, in FastAPI's words (Starlette's HTTPException texts).
FASTAPI_BODIES = {
    405: b'{"detail":"Method Not Allowed"}',
    412: b'{"detail":"Precondition Failed"}',
    416: b'{"detail":"Range Not Satisfiable"}',
}
INVALID_FILENAME = "Invalid filename"
FILE_NOT_FOUND = "Recording file not found"
DOWNLOADS = {"inbound.wav": "inbound", "outbound.wav": "outbound", "metadata.json": None}
_MAX_JSON = 16 * 1024
_ATTRIBUTE_PARAMS = ("direction", "service_id", "tts_provider")
_TTS = re.compile(r"[A-Za-z0-9_.:/ -]{1,64}")


class Unprocessable(InvalidRequest):
    """A parameter failed validation; ``errors`` are pydantic-style ``ValidationError`` items."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["msg"])
        self.errors = errors


def invalid(kind: str, loc: list[str], msg: str, value: Any, **ctx: Any) -> dict[str, Any]:
    """One pydantic-style ``ValidationError`` item, as FastAPI puts them in a 422."""
    item = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx:
        item["ctx"] = ctx
    return item


def parse_workspace_id(value: str) -> str:
    """The path's workspace id as a canonical UUID, or 422 the way FastAPI words it."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        pass
    allowed = set("0123456789abcdefABCDEF-")
    body = value.removeprefix("urn:uuid:")
    bad = next((i for i, c in enumerate(body) if c not in allowed), None)
    if bad is not None:
        problem = (
            "invalid character: expected an optional prefix of `urn:uuid:` followed by "
            f"[0-9a-fA-F-], found `{body[bad]}` at {bad + 1}"
        )
    else:
        problem = f"invalid length: expected length 32 for simple format, found {len(body)}"
    raise Unprocessable(
        [
            {
                "type": "uuid_parsing",
                "loc": ["path", "workspace_id"],
                "msg": f"Input should be a valid UUID, {problem}",
                "input": value,
                "ctx": {"error": problem},
            }
        ]
    )


def amigo_error(exc: BaseException) -> tuple[int, Any, Headers]:
    """The one place where tapevault errors become Amigo (FastAPI-shaped) answers."""
    if isinstance(exc, Unprocessable):
        return 422, {"detail": exc.errors}, []
    status, headers = status_of(exc)
    if status == 405:
        return 405, {"detail": "Method Not Allowed"}, headers
    if status == 500 or not isinstance(exc, TapevaultError):
        return 500, {"detail": "Internal Server Error"}, headers
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    elif status == 410:
        status = 404  # past retention, Amigo answers like a missing recording (its API has no 410)
    return status, {"detail": say(exc)}, headers


class AmigoDialect:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def authenticate(self, request: Request) -> KeyCaller:
        return self.ctx.api_keys.verify(request.headers.get("authorization"))

    def actor(self, caller: KeyCaller, request: Request) -> Actor:
        return with_caller(
            request.actor,
            partner_id=caller.tenant.partner_id,
            kind="api_key",
            token_id=caller.key.key_id,
        )

    def error(self, exc: BaseException) -> tuple[int, Any, Headers]:
        return amigo_error(exc)


def _workspace(request: Request, caller: KeyCaller, not_found: str) -> Tenant:
    """The caller's tenant, if the path names its workspace; else the resource's 404."""
    if parse_workspace_id(request.param("workspace_id")) != caller.tenant.workspace_id:
        raise NotFound(not_found)
    return caller.tenant


def _recordings_tenant(request: Request, caller: KeyCaller) -> Tenant:
    tenant = _workspace(request, caller, CALL_NOT_FOUND)
    if not tenant.recording_enabled:
        raise call_recording_off()
    return tenant


# --- recordings ----------------------------------------------------------------------------------


def _urls(ctx: AppContext) -> Handler[KeyCaller]:
    async def urls(request: Request, caller: KeyCaller) -> Reply:
        tenant = _recordings_tenant(request, caller)
        links = await ctx.metadata(ctx.calls.links, tenant, request.param("call_sid"))
        mode = ctx.vault.direct.access_mode(tenant, "stream")
        return Reply(200, urls_body(links), mode=mode)

    return urls


def _metadata(ctx: AppContext) -> Handler[KeyCaller]:
    async def metadata(request: Request, caller: KeyCaller) -> Reply:
        tenant = _recordings_tenant(request, caller)
        found = await ctx.metadata(ctx.calls.metadata, tenant, request.param("call_sid"))
        return Reply(200, metadata_body(found))

    return metadata


def _download(ctx: AppContext) -> Handler[KeyCaller]:
    async def download(request: Request, caller: KeyCaller) -> Reply:
        """Proxy one of the call's three files; the name must be exactly one of them (so no
        traversal, encoded separator, absolute path or NUL can ever name anything else)."""
        tenant = _recordings_tenant(request, caller)
        filename = request.param("filename")
        if filename not in DOWNLOADS:
            raise InvalidRequest(INVALID_FILENAME)
        call_sid = request.param("call_sid")
        method = request.scope["method"]
        disposition = (b"content-disposition", f'attachment; filename="{filename}"'.encode())
        session, channels = await ctx.metadata(ctx.calls.channels, tenant, call_sid)
        channel = DOWNLOADS[filename]
        if channel is None:
            found = call_metadata(tenant, session, channels)
            document = metadata_document(found)

            async def send_document(send: Send, actor: Actor) -> None:
                await ctx.access_log.commit_async(
                    AccessEvent(
                        action=Action.CALL_METADATA,
                        actor=actor,
                        status=200,
                        at_ms=now_ms(ctx.vault.clock),
                        session_id=session.session_id,
                        mode="download",
                        detail={"file": filename},
                    )
                )
                last_modified = found.media_start_epoch_ms // 1000
                await serve_document(
                    send,
                    method,
                    request.headers,
                    document,
                    last_modified,
                    [disposition],
                    FASTAPI_BODIES,
                )

            return Reply(200, stream=send_document)
        recording = channels.get(channel)
        if recording is None:
            raise NotFound(FILE_NOT_FOUND)

        async def send_audio(send: Send, actor: Actor) -> None:
            await serve_playback(
                ctx,
                request.receive,
                send,
                method,
                request.headers,
                recording,
                [disposition],
                actor=actor,
                credential=caller.key.key_id,
                mode="download",
                error_bodies=FASTAPI_BODIES,
                proxied=came_through_proxy(request.scope),
            )

        return Reply(200, session_id=session.session_id, stream=send_audio)

    return download


def _upload(ctx: AppContext) -> Handler[KeyCaller]:
    async def upload(request: Request, caller: KeyCaller) -> Reply:
        tenant = _recordings_tenant(request, caller)
        call_sid = request.param("call_sid")
        channel = request.query.get("channel")
        if channel is None:
            raise Unprocessable([invalid("missing", ["query", "channel"], "Field required", None)])
        if channel not in CHANNELS:
            raise Unprocessable([_enum(["query", "channel"], channel, CHANNELS)])
        start_text = request.query.get("media_start_epoch_ms")
        start = None
        if start_text is not None:
            if not is_digits(start_text, 15):
                raise Unprocessable(
                    [
                        invalid(
                            "int_parsing",
                            ["query", "media_start_epoch_ms"],
                            "Input should be a valid integer, unable to parse string as an integer",
                            start_text,
                        )
                    ]
                )
            start = int(start_text)
        attributes = {k: request.query[k] for k in _ATTRIBUTE_PARAMS if k in request.query}
        _check_attributes(attributes)
        # Past the storage quota: refused before the body is read.
        room = max(1, declared_length(request.headers))
        await ctx.metadata(ctx.vault.quotas.check, tenant, room)
        recording = await receive_upload(
            ctx,
            request.receive,
            request.headers,
            lambda path, fmt: ctx.calls.accept_upload(
                tenant,
                call_sid,
                channel,
                path,
                fmt,
                media_start_epoch_ms=start,
                attributes=attributes,
            ),
        )
        body = {"call_sid": call_sid, **recording_body(recording)}
        return Reply(
            202, body, session_id=recording.session_id, recording_id=recording.recording_id
        )

    return upload


def _enum(loc: list[str], value: Any, choices: tuple[str, ...]) -> dict[str, Any]:
    expected = " or ".join(f"'{c}'" for c in choices)
    return invalid("enum", loc, f"Input should be {expected}", value, expected=expected)


def _check_attributes(attributes: dict[str, str]) -> None:
    """The call's descriptive parameters, validated as FastAPI would (422, one item each)."""
    errors: list[dict[str, Any]] = []
    direction = attributes.get("direction")
    if direction is not None and direction not in ("inbound", "outbound"):
        errors.append(_enum(["query", "direction"], direction, ("inbound", "outbound")))
    service = attributes.get("service_id")
    if service is not None:
        try:
            attributes["service_id"] = str(uuid.UUID(service))
        except ValueError:
            errors.append(
                invalid(
                    "uuid_parsing", ["query", "service_id"], "Input should be a valid UUID", service
                )
            )
    tts = attributes.get("tts_provider")
    if tts is not None and not _TTS.fullmatch(tts):
        pattern = _TTS.pattern
        errors.append(
            invalid(
                "string_pattern_mismatch",
                ["query", "tts_provider"],
                f"String should match pattern '{pattern}'",
                tts,
                pattern=pattern,
            )
        )
    if errors:
        raise Unprocessable(errors)


# --- API keys ------------------------------------------------------------------------------------


def key_body(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.key_id,
        "prefix": key.prefix,
        "name": key.name,
        "role": key.role.value,
        "created_at": iso_ms(key.created_ms),
        "expires_at": iso_ms(key.expires_ms) if key.expires_ms else None,
        "revoked_at": iso_ms(key.revoked_ms) if key.revoked_ms else None,
    }


def _key_request(raw: bytes) -> tuple[str, KeyRole, int | None]:
    """``{"name": str, "role": "admin"|"member", "expires_in_days": int}``, all optional."""
    if not raw.strip():
        return "api key", KeyRole.MEMBER, None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Unprocessable([invalid("json_invalid", ["body"], "JSON decode error", {})]) from None
    if not isinstance(data, dict):
        raise Unprocessable(
            [invalid("model_attributes_type", ["body"], "Input should be an object", data)]
        )
    name = data.get("name", "api key")
    role = data.get("role", KeyRole.MEMBER.value)
    days = data.get("expires_in_days")
    errors: list[dict[str, Any]] = []
    if not isinstance(name, str):
        errors.append(
            invalid("string_type", ["body", "name"], "Input should be a valid string", name)
        )
    elif len(name) > MAX_NAME:
        errors.append(
            invalid(
                "string_too_long",
                ["body", "name"],
                f"String should have at most {MAX_NAME} characters",
                name,
                max_length=MAX_NAME,
            )
        )
    if role not in (KeyRole.ADMIN.value, KeyRole.MEMBER.value):
        errors.append(_enum(["body", "role"], role, ("admin", "member")))
    if days is not None and (not isinstance(days, int) or isinstance(days, bool)):
        errors.append(
            invalid(
                "int_type", ["body", "expires_in_days"], "Input should be a valid integer", days
            )
        )
    elif isinstance(days, int) and days < 1:
        errors.append(
            invalid(
                "greater_than_equal",
                ["body", "expires_in_days"],
                "Input should be greater than or equal to 1",
                days,
                ge=1,
            )
        )
    elif isinstance(days, int) and days > MAX_KEY_DAYS:
        errors.append(
            invalid(
                "less_than_equal",
                ["body", "expires_in_days"],
                f"Input should be less than or equal to {MAX_KEY_DAYS}",
                days,
                le=MAX_KEY_DAYS,
            )
        )
    if errors:
        raise Unprocessable(errors)
    return str(name), KeyRole(role), days


def _create_key(ctx: AppContext) -> Handler[KeyCaller]:
    async def create_key(request: Request, caller: KeyCaller) -> Reply:
        tenant = _workspace(request, caller, "Workspace not found")
        caller.require(KeyRole.ADMIN)
        name, role, days = _key_request(await read_small(request.receive, _MAX_JSON))
        key, secret = await ctx.metadata(
            lambda: ctx.vault.tenants.issue_key(tenant, name=name, role=role, expires_in_days=days)
        )
        return Reply(201, {**key_body(key), "api_key": secret}, detail={"key_id": key.key_id})

    return create_key


def _list_keys(ctx: AppContext) -> Handler[KeyCaller]:
    async def list_keys(request: Request, caller: KeyCaller) -> Reply:
        tenant = _workspace(request, caller, "Workspace not found")
        caller.require(KeyRole.ADMIN)
        keys = await ctx.metadata(ctx.vault.tenants.keys, tenant)
        return Reply(200, {"api_keys": [key_body(k) for k in keys]})

    return list_keys


def _revoke_key(ctx: AppContext) -> Handler[KeyCaller]:
    async def revoke_key(request: Request, caller: KeyCaller) -> Reply:
        tenant = _workspace(request, caller, "API key not found.")
        caller.require(KeyRole.ADMIN)
        key = await ctx.metadata(ctx.vault.tenants.revoke_key, tenant, request.param("key_id"))
        return Reply(204, detail={"key_id": key.key_id})

    return revoke_key


class _Anything(Convertor[str]):
    """Like Starlette's ``path`` convertor, but across line breaks too."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anything", _Anything())


def routes(ctx: AppContext) -> list[tuple[str, Endpoint[KeyCaller]]]:
    amigo = AmigoDialect(ctx)

    def endpoint(
        methods: list[str], handler: Handler[KeyCaller], action: Action
    ) -> Endpoint[KeyCaller]:
        return Endpoint(ctx, amigo, methods, handler, action)

    base = "/v1/{workspace_id}"
    return [
        (
            f"{base}/recordings/{{call_sid}}/urls",
            endpoint(["GET"], _urls(ctx), Action.CALL_URLS),
        ),
        (
            f"{base}/recordings/{{call_sid}}/metadata",
            endpoint(["GET"], _metadata(ctx), Action.CALL_METADATA),
        ),
        (
            # ``:anything`` so that a name with separators or line breaks reaches the handler
            # and gets its 400, instead of missing the route.
            f"{base}/recordings/{{call_sid}}/download/{{filename:anything}}",
            endpoint(["GET", "HEAD"], _download(ctx), Action.CALL_DOWNLOAD),
        ),
        (
            f"{base}/calls/{{call_sid}}/audio",
            endpoint(["POST"], _upload(ctx), Action.RECORDING_UPLOAD),
        ),
        (
            f"{base}/api-keys",
            Endpoint(
                ctx,
                amigo,
                ["GET", "POST"],
                _keys(ctx),
                {"GET": Action.KEY_LIST, "POST": Action.KEY_CREATE},
            ),
        ),
        (
            f"{base}/api-keys/{{key_id}}",
            endpoint(["DELETE"], _revoke_key(ctx), Action.KEY_REVOKE),
        ),
    ]


def _keys(ctx: AppContext) -> Handler[KeyCaller]:
    create, listing = _create_key(ctx), _list_keys(ctx)

    async def keys(request: Request, caller: KeyCaller) -> Reply:
        if request.scope["method"] == "POST":
            return await create(request, caller)
        return await listing(request, caller)

    return keys
