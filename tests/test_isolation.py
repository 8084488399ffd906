"""Tenant isolation, as a generated matrix: every route of every dialect, called with tenant A's
credentials on tenant B's ids, must answer exactly as it answers an id that exists nowhere, and
on A's own ids with the route's success status (a route that answered 404 to everyone would
pass the first check alone).

The routes are enumerated from the application's own router (a route added later is probed
without touching this file, but its success must be written in ``OWNER``); each path parameter
is varied on its own — B's value against a fresh unknown one of the same shape — while the
others keep A's own valid values. Then the resources
outside the router: signed media URLs, the live-stream WebSocket, tus uploads and Kore's
``sessionId``. A difference in status, body or header names is a leak (an existence oracle).
"""

from __future__ import annotations

import base64
import contextlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.routing import Route, Router

from tapevault.audio_gen import tone_wav_bytes
from tapevault.core.audit import AuditEntry
from tapevault.core.checkpoints import load_or_create_signer
from tapevault.core.clock import FixedClock, SystemClock
from tapevault.core.integrator import Integrator
from tapevault.http.endpoint import Endpoint
from tapevault.runtime import Runtime
from tests.dialects import Customer, customer, local, upload_channel

CALL = "CA" + "b" * 32
VOLATILE_HEADERS = {"date", "x-request-id"}
GENERATED = re.compile(
    rb"[0-9A-HJKMNP-TV-Z]{26}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


@dataclass
class World:
    """Tenant A (the caller) and B (the owner), each with a full set of resources."""

    a: Customer
    b: Customer
    ids: dict[str, dict[str, str]]  # param name -> {"own": A's, "foreign": B's}


async def resources(client: httpx.AsyncClient, runtime: Runtime, who: Customer) -> dict[str, str]:
    """An ended ambient session with a recording, a two-channel call with its merged file, a
    second API key, a tus upload in progress and a webhook endpoint with deliveries; returns
    their ids."""
    hook = await client.post("/api/v1/webhooks", headers=who.bearer, json={"url": HOOK_URL})
    assert hook.status_code == 201, hook.text
    session = (await client.post("/api/v1/ambient/session/create", headers=who.suki)).json()
    session_id = session["ambient_session_id"]
    await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.5),
    )
    runtime.worker.run_until_idle()
    upload = await client.post(
        "/api/v1/uploads",
        headers={
            **who.suki,
            "tus-resumable": "1.0.0",
            "upload-length": "100",
            "upload-metadata": f"session_id {_b64(session_id)}",
        },
    )
    assert upload.status_code == 201, upload.text
    await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=who.suki)
    for channel in ("inbound", "outbound"):
        await upload_channel(client, runtime, who, CALL, channel, tone_wav_bytes(0.5))
    merged = await client.get(
        f"/api/public/bot/{who.bot}/v2/recordings", params={"sessionId": CALL}, headers=who.kore
    )
    assert merged.json()["status"] == "success"
    key = await client.post(f"/v1/{who.ws}/api-keys", headers=who.bearer, json={"name": "k"})
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki)
    link = await client.post(f"/api/v1/sessions/{session_id}/player-links", headers=who.bearer)
    webhook_id = hook.json()["id"]
    deliveries = await client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=who.bearer)
    return {
        "webhook_id": webhook_id,
        "delivery_id": deliveries.json()["deliveries"][0]["id"],
        "link_id": link.json()["link_id"],
        "session_id": session_id,
        "call_sid": CALL,
        "workspace_id": who.ws,
        "bot_id": who.bot,
        "key_id": key.json()["id"],
        "upload_id": upload.headers["location"].rsplit("/", 1)[1],
        "presigned_url": urls.json()["recordings"][0]["presigned_url"],
        "recording_id": urls.json()["recordings"][0]["recording_id"],
        "seq": signed_record(runtime, who.tenant.partner_id),
    }


def signed_record(runtime: Runtime, partner_id: str) -> str:
    """A record of the tenant in the durable log (this runtime records into memory), integrated
    and covered by a signed checkpoint: what the proof routes read. Its seq."""
    store = runtime.audit_store
    store.write([AuditEntry(at_ms=1, action="audit.read", status=200, tenant_id=partner_id)])
    signer = load_or_create_signer(runtime.settings.audit_key_path)
    integrator = Integrator(store, SystemClock(), signer)
    assert integrator.settle(10)
    assert integrator.checkpoint() is not None
    store.release_role()
    return str(store.state().head_seq)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
async def world(client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock) -> World:
    a, b = customer(runtime, clock, "A"), customer(runtime, clock, "B")
    own, foreign = await resources(client, runtime, a), await resources(client, runtime, b)
    ids = {name: {"own": own[name], "foreign": foreign[name]} for name in own}
    ids["call_sid"]["foreign"] = "CA" + "c" * 32  # B's calls by their SID are A's to create too
    return World(a, b, ids)


def unknown(name: str, own: str) -> str:
    """A fresh id shaped like ``own`` that exists nowhere."""
    if name in ("workspace_id", "session_id"):
        return str(uuid.uuid4())
    if name == "bot_id":
        return f"st-{uuid.uuid4()}"
    if name == "call_sid":
        return "CA" + uuid.uuid4().hex
    if name == "seq":
        return str(10**12 + uuid.uuid4().int % 10**9)
    return uuid.uuid4().hex[: len(own)] if len(own) <= 32 else str(uuid.uuid4())


def credentials(endpoint: Endpoint[Any], who: Customer) -> dict[str, str]:
    """Tenant A's credential for the dialect of ``endpoint``."""
    sample = {
        "SukiDialect": who.suki,
        "AmigoDialect": who.bearer,
        "KoreDialect": who.kore,
        "AdminDialect": who.bearer,
        "NativeDialect": who.bearer,
        "MetricsDialect": who.bearer,
    }
    return sample[type(endpoint.dialect).__name__]


def fingerprint(response: httpx.Response) -> tuple[int, bytes, frozenset[str]]:
    """What must not differ: status, body (generated ids masked) and header names."""
    body = GENERATED.sub(b"<id>", response.content)
    names = frozenset(k.lower() for k in response.headers) - VOLATILE_HEADERS
    return response.status_code, body, names


def find_router(app: Any, depth: int = 4) -> Router:
    """The Router inside the application's closures, through any wrappers around it (the
    request log's, the metrics')."""
    cells = [cell.cell_contents for cell in getattr(app, "__closure__", None) or ()]
    for value in cells:
        if isinstance(value, Router):
            return value
    if depth:
        for value in cells:
            if callable(value) and getattr(value, "__closure__", None):
                with contextlib.suppress(LookupError):
                    return find_router(value, depth - 1)
    raise LookupError("no Router in the application's closures")


def routes_of(runtime: Runtime) -> list[tuple[str, Endpoint[Any]]]:
    router = find_router(runtime.asgi())
    # A player link's playlist is opened by the link's own secret, not a tenant's credential:
    # tests/test_player_links.py checks that a wrong secret answers like an unknown link.
    return [
        (route.path, route.app)
        for route in router.routes
        if isinstance(route, Route)
        and isinstance(route.app, Endpoint)
        and type(route.app.dialect).__name__ != "PlayerDialect"
    ]


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m.group(1)], path)


async def probe(
    client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str]
) -> httpx.Response:
    if method == "PUT":  # holds and retention: a valid body, so the id is what is judged
        body = b'{"reason": "probe", "retention": "30d"}'
        extra = {"content-type": "application/json"}
        return await client.request(method, url, headers={**headers, **extra}, content=body)
    content = tone_wav_bytes(0.2) if method == "POST" else None
    extra = {"content-type": "audio/wav"} if content else {}
    return await client.request(method, url, headers={**headers, **extra}, content=content)


@dataclass(frozen=True)
class Success:
    """How the owner calls a route, and what it answers them.

    ``fresh`` names a resource made for this one call (``Fresh``) when the call changes or
    needs a state the shared world does not have: an open session to upload to, end or stream
    into, a call SID not used yet, a recording or session to delete, a held session to release.
    """

    status: int
    fresh: str | None = None
    body: str | None = None  # "wav", or a JSON text
    query: tuple[tuple[str, str], ...] = ()
    kore_status: str | None = None  # Kore answers 200 to everyone: its body says success


SESSION = "/api/v1/ambient/session/{session_id}"
CALLS = "/v1/{workspace_id}/recordings/{call_sid}"
PUT_BODY = '{"reason": "probe", "retention": "30d"}'
HOOK_URL = "https://93.184.215.14/tapevault-hook"  # a public address: no DNS, no SSRF refusal
OWNER: dict[tuple[str, str], Success] = {
    ("GET", f"{SESSION}/recording"): Success(200),
    ("HEAD", f"{SESSION}/recording"): Success(200),
    ("POST", "/api/v1/ambient/session/create"): Success(201),
    ("POST", "/api/v1/form-filling/session/create"): Success(201),
    ("POST", f"{SESSION}/audio"): Success(202, fresh="open_session", body="wav"),
    ("POST", f"{SESSION}/stream-ticket"): Success(201, fresh="open_session"),
    ("POST", f"{SESSION}/end"): Success(200, fresh="open_session"),
    ("GET", SESSION): Success(200),
    ("HEAD", SESSION): Success(200),
    ("GET", f"{CALLS}/urls"): Success(200),
    ("HEAD", f"{CALLS}/urls"): Success(200),
    ("GET", f"{CALLS}/metadata"): Success(200),
    ("HEAD", f"{CALLS}/metadata"): Success(200),
    ("GET", f"{CALLS}/download/{{filename:anything}}"): Success(200),
    ("HEAD", f"{CALLS}/download/{{filename:anything}}"): Success(200),
    ("POST", "/v1/{workspace_id}/calls/{call_sid}/audio"): Success(
        202, fresh="call", body="wav", query=(("channel", "inbound"),)
    ),
    ("GET", "/v1/{workspace_id}/api-keys"): Success(200),
    ("HEAD", "/v1/{workspace_id}/api-keys"): Success(200),
    ("POST", "/v1/{workspace_id}/api-keys"): Success(201, body='{"name": "probe"}'),
    ("DELETE", "/v1/{workspace_id}/api-keys/{key_id}"): Success(204),
    ("GET", "/api/public/bot/{bot_id}/v2/recordings"): Success(
        200, query=(("sessionId", CALL),), kore_status="success"
    ),
    ("HEAD", "/api/public/bot/{bot_id}/v2/recordings"): Success(200, query=(("sessionId", CALL),)),
    ("GET", "/api/v1/audit"): Success(200),
    ("GET", "/api/v1/audit/{seq}/proof"): Success(200),
    ("HEAD", "/api/v1/audit/{seq}/proof"): Success(200),
    ("GET", "/api/v1/audit/consistency"): Success(200, query=(("from", "1"),)),
    ("HEAD", "/api/v1/audit/consistency"): Success(200, query=(("from", "1"),)),
    ("HEAD", "/api/v1/audit"): Success(200),
    ("GET", "/api/v1/recordings/{recording_id}/access"): Success(200),
    ("HEAD", "/api/v1/recordings/{recording_id}/access"): Success(200),
    ("PUT", "/api/v1/recordings/{recording_id}/retention"): Success(200, body=PUT_BODY),
    ("DELETE", "/api/v1/recordings/{recording_id}"): Success(200, fresh="recording"),
    ("PUT", "/api/v1/sessions/{session_id}/hold"): Success(200, fresh="session", body=PUT_BODY),
    ("DELETE", "/api/v1/sessions/{session_id}/hold"): Success(200, fresh="held_session"),
    ("PUT", "/api/v1/sessions/{session_id}/retention"): Success(200, body=PUT_BODY),
    ("GET", "/api/v1/sessions"): Success(200),
    ("HEAD", "/api/v1/sessions"): Success(200),
    ("GET", "/api/v1/sessions/{session_id}/recordings"): Success(200),
    ("HEAD", "/api/v1/sessions/{session_id}/recordings"): Success(200),
    ("GET", "/api/v1/sessions/{session_id}"): Success(200),
    ("HEAD", "/api/v1/sessions/{session_id}"): Success(200),
    ("DELETE", "/api/v1/sessions/{session_id}"): Success(200, fresh="session"),
    ("GET", "/api/v1/sessions/{session_id}/player-links"): Success(200),
    ("HEAD", "/api/v1/sessions/{session_id}/player-links"): Success(200),
    ("POST", "/api/v1/sessions/{session_id}/player-links"): Success(201, body="{}"),
    ("DELETE", "/api/v1/player-links/{link_id}"): Success(200),
    ("GET", f"{SESSION}/player"): Success(200),
    ("HEAD", f"{SESSION}/player"): Success(200),
    ("GET", "/metrics"): Success(200),
    ("HEAD", "/metrics"): Success(200),
    ("GET", "/api/v1/webhooks"): Success(200),
    ("HEAD", "/api/v1/webhooks"): Success(200),
    ("POST", "/api/v1/webhooks"): Success(201, body=f'{{"url": "{HOOK_URL}"}}'),
    ("GET", "/api/v1/webhooks/{webhook_id}"): Success(200),
    ("HEAD", "/api/v1/webhooks/{webhook_id}"): Success(200),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): Success(204, fresh="webhook"),
    ("POST", "/api/v1/webhooks/{webhook_id}/rotate-secret"): Success(200),
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): Success(200),
    ("HEAD", "/api/v1/webhooks/{webhook_id}/deliveries"): Success(200),
    ("POST", "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay"): Success(202),
}


@dataclass
class Fresh:
    """Resources of tenant A made for one owner call, as path values that replace the world's."""

    client: httpx.AsyncClient
    runtime: Runtime
    who: Customer

    async def make(self, kind: str) -> dict[str, str]:
        if kind == "call":
            return {"call_sid": "CA" + uuid.uuid4().hex}
        if kind == "webhook":
            hook = await self.client.post(
                "/api/v1/webhooks", headers=self.who.bearer, json={"url": HOOK_URL}
            )
            assert hook.status_code == 201, hook.text
            return {"webhook_id": hook.json()["id"]}
        session_id = await self.open_session()
        if kind == "open_session":
            return {"session_id": session_id}
        recording_id = await self.record(session_id)
        if kind == "recording":
            return {"recording_id": recording_id}
        if kind == "held_session":
            held = await self.client.put(
                f"/api/v1/sessions/{session_id}/hold",
                headers={**self.who.bearer, "content-type": "application/json"},
                content=PUT_BODY,
            )
            assert held.status_code == 200, held.text
        assert kind in ("session", "held_session"), kind
        return {"session_id": session_id}

    async def open_session(self) -> str:
        created = await self.client.post("/api/v1/ambient/session/create", headers=self.who.suki)
        assert created.status_code == 201, created.text
        session_id: str = created.json()["ambient_session_id"]
        return session_id

    async def record(self, session_id: str) -> str:
        """Upload a tone, end the session, let the worker store it: the recording's id."""
        up = await self.client.post(
            f"/api/v1/ambient/session/{session_id}/audio",
            headers={**self.who.suki, "content-type": "audio/wav"},
            content=tone_wav_bytes(0.2),
        )
        assert up.status_code == 202, up.text
        await self.client.post(f"/api/v1/ambient/session/{session_id}/end", headers=self.who.suki)
        self.runtime.worker.run_until_idle()
        recording_id: str = up.json()["recording_id"]
        return recording_id


async def call_as_owner(
    client: httpx.AsyncClient,
    fresh: Fresh,
    world: World,
    route: tuple[str, Endpoint[Any], str],
    spec: Success,
) -> httpx.Response:
    """The route called by tenant A on A's own ids (fresh ones where ``spec`` says so)."""
    path, endpoint, method = route
    names = re.findall(r"\{(\w+)(?::\w+)?\}", path)
    values = {n: world.ids[n]["own"] if n in world.ids else "inbound.wav" for n in names}
    if spec.fresh is not None:
        values.update(await fresh.make(spec.fresh))
    headers = dict(credentials(endpoint, world.a))
    content = None
    if spec.body == "wav":
        headers["content-type"] = "audio/wav"
        content = tone_wav_bytes(0.2)
    elif spec.body is not None:
        headers["content-type"] = "application/json"
        content = spec.body.encode()
    return await client.request(
        method, fill(path, values), headers=headers, params=dict(spec.query), content=content
    )


async def test_every_route_serves_its_owner_and_answers_foreign_ids_like_unknown_ones(
    client: httpx.AsyncClient, runtime: Runtime, world: World
) -> None:
    """Router routes × methods: A's own ids succeed; then, for each path parameter, B's id looks
    exactly like no id."""
    probes = 0
    leaks: list[str] = []
    fresh = Fresh(client, runtime, world.a)
    routes = routes_of(runtime)
    assert len(routes) >= 12, [p for p, _ in routes]
    # Reads first: a POST with B's call SID creates a call of A's own, which later reads would find.
    plans = sorted(
        ((path, endpoint, method) for path, endpoint in routes for method in endpoint.methods),
        key=lambda plan: plan[2] not in ("GET", "HEAD"),
    )
    for path, endpoint, method in plans:
        spec = OWNER.get((method, path))
        if spec is None:
            leaks.append(f"{method} {path}: no success written in OWNER for its owner's call")
        else:
            seen_own = await call_as_owner(client, fresh, world, (path, endpoint, method), spec)
            runtime.worker.run_until_idle()
            kore = seen_own.json().get("status") if spec.kore_status else None
            if seen_own.status_code != spec.status or kore != spec.kore_status:
                expected = f"{spec.status} {spec.kore_status or ''}".strip()
                leaks.append(
                    f"{method} {path} [own ids]: {seen_own.status_code} "
                    f"{seen_own.text[:120]!r}, not the owner's {expected}"
                )
        names = re.findall(r"\{(\w+)(?::\w+)?\}", path)
        own = {n: world.ids[n]["own"] if n in world.ids else "inbound.wav" for n in names}
        for name in names:
            if name not in world.ids:
                continue  # e.g. a download's filename: not an id
            foreign = fill(path, {**own, name: world.ids[name]["foreign"]})
            nobody = fill(path, {**own, name: unknown(name, own[name])})
            headers = credentials(endpoint, world.a)
            seen_foreign = await probe(client, method, foreign, headers)
            seen_unknown = await probe(client, method, nobody, headers)
            runtime.worker.run_until_idle()
            probes += 1
            if seen_unknown.status_code in (401, 403) or seen_unknown.status_code >= 500:
                leaks.append(f"{method} {path} [{name}]: {seen_unknown.status_code}, not judged")
            if fingerprint(seen_foreign) != fingerprint(seen_unknown):
                leaks.append(
                    f"{method} {path} [{name}]: foreign {seen_foreign.status_code} "
                    f"{seen_foreign.text[:120]!r} vs unknown {seen_unknown.status_code} "
                    f"{seen_unknown.text[:120]!r}"
                )
    assert probes >= 15
    assert not leaks, "\n".join(leaks)


async def test_kore_session_id_of_another_tenant_is_unavailable(
    client: httpx.AsyncClient, world: World
) -> None:
    """Kore's sessionId (a query, not a path parameter): B's session or call is like none, while
    A's own call (the same SID as one of B's) is A's recording."""
    url = f"/api/public/bot/{world.a.bot}/v2/recordings"
    own = await client.get(url, params={"sessionId": CALL}, headers=world.a.kore)
    assert own.json()["status"] == "success", own.text
    (entry,) = own.json()["recording"]
    assert (await client.get(local(entry["fileUrl"]))).status_code == 200
    for foreign in (world.ids["session_id"]["foreign"], "CA" + "c" * 32):
        seen = await client.get(url, params={"sessionId": foreign}, headers=world.a.kore)
        nobody = await client.get(
            url, params={"sessionId": "x" + foreign[1:]}, headers=world.a.kore
        )
        assert fingerprint(seen) == fingerprint(nobody)
        assert seen.json()["status"] == "media_unavailable"


async def test_signed_urls_cannot_be_moved_to_another_tenants_recording(
    client: httpx.AsyncClient, world: World
) -> None:
    """A's valid signature on B's recording id (audio or metadata) is like an unknown id."""
    query = world.ids["presigned_url"]["own"].split("?", 1)[1]
    b_recording = world.ids["recording_id"]["foreign"]
    for suffix in (".wav", ".json"):
        seen = await client.get(f"/media/{b_recording}{suffix}?{query}")
        nobody = await client.get(f"/media/{unknown('r', b_recording)}{suffix}?{query}")
        assert fingerprint(seen) == fingerprint(nobody)
        assert seen.status_code == 403
    b_url = local(world.ids["presigned_url"]["foreign"])
    assert (await client.get(b_url)).status_code == 200  # B's own URL works, for contrast


async def test_tus_uploads_and_stream_of_another_tenant(
    client: httpx.AsyncClient, world: World, runtime: Runtime
) -> None:
    """tus: B's upload id or session id with A's token; the live stream on B's session. Each
    is answered like an unknown one, and A's own is served."""
    tus = {**world.a.suki, "tus-resumable": "1.0.0"}
    b_upload, nobody_upload = world.ids["upload_id"]["foreign"], uuid.uuid4().hex
    own_upload = f"/api/v1/uploads/{world.ids['upload_id']['own']}"
    patch = {"upload-offset": "0", "content-type": "application/offset+octet-stream"}
    own = [
        (await client.head(own_upload, headers=tus)).status_code,
        (await client.patch(own_upload, headers={**tus, **patch}, content=b"x")).status_code,
    ]
    assert own == [200, 204], own
    for method in ("HEAD", "PATCH", "DELETE"):
        extra = (
            {"upload-offset": "0", "content-type": "application/offset+octet-stream"}
            if method == "PATCH"
            else {}
        )
        seen, nobody = [
            await client.request(
                method, f"/api/v1/uploads/{upload}", headers={**tus, **extra}, content=b"x"
            )
            for upload in (b_upload, nobody_upload)
        ]
        assert fingerprint(seen) == fingerprint(nobody), method
        assert seen.status_code == 404, (method, seen.text)
    creations = [
        await client.post(
            "/api/v1/uploads",
            headers={
                **tus,
                "upload-length": "100",
                "upload-metadata": f"session_id {_b64(session)}",
            },
        )
        for session in (world.ids["session_id"]["foreign"], str(uuid.uuid4()))
    ]
    assert fingerprint(creations[0]) == fingerprint(creations[1])
    assert creations[0].status_code == 404
    open_session = await Fresh(client, runtime, world.a).open_session()
    metadata = f"session_id {_b64(open_session)}"
    own_creation = await client.post(
        "/api/v1/uploads", headers={**tus, "upload-length": "100", "upload-metadata": metadata}
    )
    assert own_creation.status_code == 201, own_creation.text
    assert (await client.delete(own_upload, headers=tus)).status_code == 204
    closes = [
        await websocket_close(runtime, f"/api/v1/ambient/session/{session}/stream", world.a.suki)
        for session in (world.ids["session_id"]["foreign"], str(uuid.uuid4()))
    ]
    assert closes[0] == closes[1] and closes[0][0] == 4404
    own_stream = await websocket_messages(
        runtime, f"/api/v1/ambient/session/{open_session}/stream", world.a.suki
    )
    assert own_stream[0]["type"] == "websocket.accept", own_stream


async def websocket_close(runtime: Runtime, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """Open a WebSocket through the ASGI app; its close code and reason."""
    sent = await websocket_messages(runtime, path, headers)
    close = next(m for m in sent if m["type"] == "websocket.close")
    return int(close["code"]), str(close.get("reason", ""))


async def websocket_messages(
    runtime: Runtime, path: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    """Open a WebSocket through the ASGI app and leave at once; what the app sent."""
    sent: list[dict[str, Any]] = []
    incoming = iter([{"type": "websocket.connect"}])

    async def receive() -> dict[str, Any]:
        return next(incoming, {"type": "websocket.disconnect", "code": 1000})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("vault.test", 443),
        "scheme": "wss",
        "subprotocols": [],
        "root_path": "",
    }
    await runtime.asgi()(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def test_nul_in_any_id_is_a_client_answer_never_a_500(
    client: httpx.AsyncClient, runtime: Runtime, world: World
) -> None:
    """Every route with an id holding NUL (which PostgreSQL cannot even compare), plus NUL in
    audit filters and key names: a 4xx every time, on both databases; in Kore's sessionId, the
    answer of an unknown session."""
    failures = []
    probes = 0
    plans = [(p, e, m) for p, e in routes_of(runtime) for m in e.methods]
    for path, endpoint, method in plans:
        names = re.findall(r"\{(\w+)(?::\w+)?\}", path)
        own = {n: world.ids[n]["own"] if n in world.ids else "inbound.wav" for n in names}
        for name in names:
            url = fill(path, {**own, name: "a%00b"})
            response = await probe(client, method, url, credentials(endpoint, world.a))
            probes += 1
            if not 400 <= response.status_code < 500:
                failures.append(f"{method} {url}: {response.status_code} {response.text[:80]}")
    assert probes >= 15
    kore = await client.get(
        f"/api/public/bot/{world.a.bot}/v2/recordings",
        params={"sessionId": "a\x00b"},
        headers=world.a.kore,
    )
    assert kore.status_code == 200  # Kore answers any unknown session this way
    assert kore.json() == {"status": "media_unavailable", "recording": []}
    extra = [
        await client.get("/api/v1/audit", params={"action": "a\x00b"}, headers=world.a.bearer),
        await client.post(
            f"/v1/{world.a.ws}/api-keys", json={"name": "a\x00b"}, headers=world.a.bearer
        ),
    ]
    failures += [
        f"{r.request.url}: {r.status_code}" for r in extra if not 400 <= r.status_code < 500
    ]
    assert not failures, "\n".join(failures)
