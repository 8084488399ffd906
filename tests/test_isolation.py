"""Tenant isolation, as a generated matrix: every route of every dialect, called with tenant A's
credentials on tenant B's ids, must answer exactly as it answers an id that exists nowhere.

The routes are enumerated from the application's own router (a route added later is probed
without touching this file); each path parameter is varied on its own — B's value against a fresh
unknown one of the same shape — while the others keep A's own valid values. Then the resources
outside the router: signed media URLs, the live-stream WebSocket, tus uploads and Kore's
``sessionId``. A difference in status, body or header names is a leak (an existence oracle).
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.routing import Route, Router

from tapevault.audio_gen import tone_wav_bytes
from tapevault.core.clock import FixedClock
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
    second API key and a tus upload in progress; returns their ids."""
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
    return {
        "session_id": session_id,
        "call_sid": CALL,
        "workspace_id": who.ws,
        "bot_id": who.bot,
        "key_id": key.json()["id"],
        "upload_id": upload.headers["location"].rsplit("/", 1)[1],
        "presigned_url": urls.json()["recordings"][0]["presigned_url"],
        "recording_id": urls.json()["recordings"][0]["recording_id"],
    }


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
    return uuid.uuid4().hex[: len(own)] if len(own) <= 32 else str(uuid.uuid4())


def credentials(endpoint: Endpoint[Any], who: Customer) -> dict[str, str]:
    """Tenant A's credential for the dialect of ``endpoint``."""
    sample = {
        "SukiDialect": who.suki,
        "AmigoDialect": who.bearer,
        "KoreDialect": who.kore,
        "AdminDialect": who.bearer,
    }
    return sample[type(endpoint.dialect).__name__]


def fingerprint(response: httpx.Response) -> tuple[int, bytes, frozenset[str]]:
    """What must not differ: status, body (generated ids masked) and header names."""
    body = GENERATED.sub(b"<id>", response.content)
    names = frozenset(k.lower() for k in response.headers) - VOLATILE_HEADERS
    return response.status_code, body, names


def routes_of(runtime: Runtime) -> list[tuple[str, Endpoint[Any]]]:
    app = runtime.asgi()
    router = next(
        cell.cell_contents
        for cell in app.__closure__ or ()  # type: ignore[attr-defined]
        if isinstance(cell.cell_contents, Router)
    )
    return [
        (route.path, route.app)
        for route in router.routes
        if isinstance(route, Route) and isinstance(route.app, Endpoint)
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


async def test_every_route_answers_foreign_ids_like_unknown_ones(
    client: httpx.AsyncClient, runtime: Runtime, world: World
) -> None:
    """Router routes × methods × each path parameter: B's id looks exactly like no id."""
    probes = 0
    leaks: list[str] = []
    routes = routes_of(runtime)
    assert len(routes) >= 12, [p for p, _ in routes]
    # Reads first: a POST with B's call SID creates a call of A's own, which later reads would find.
    plans = sorted(
        ((path, endpoint, method) for path, endpoint in routes for method in endpoint.methods),
        key=lambda plan: plan[2] not in ("GET", "HEAD"),
    )
    for path, endpoint, method in plans:
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
    """Kore's sessionId (a query, not a path parameter): B's session or call is like none."""
    url = f"/api/public/bot/{world.a.bot}/v2/recordings"
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
    """tus: B's upload id or session id with A's token; the live stream on B's session."""
    tus = {**world.a.suki, "tus-resumable": "1.0.0"}
    b_upload, nobody_upload = world.ids["upload_id"]["foreign"], uuid.uuid4().hex
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
    closes = [
        await websocket_close(runtime, f"/api/v1/ambient/session/{session}/stream", world.a.suki)
        for session in (world.ids["session_id"]["foreign"], str(uuid.uuid4()))
    ]
    assert closes[0] == closes[1] and closes[0][0] == 4404


async def websocket_close(runtime: Runtime, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """Open a WebSocket through the ASGI app; its close code and reason."""
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
    close = next(m for m in sent if m["type"] == "websocket.close")
    return int(close["code"]), str(close.get("reason", ""))


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
