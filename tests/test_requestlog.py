"""The request log (one JSON line per request on ``tapevault.request``) and ``X-Request-Id``:
settled once per request, returned on every answer, written into the access records."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import websockets
from websockets.asyncio.client import connect

from tapevault.audio_gen import tone_wav_bytes
from tapevault.config import Settings
from tapevault.core.access import MemoryAccessLog
from tapevault.core.clock import FixedClock
from tapevault.errors import ConfigError
from tapevault.http.asgi import REQUEST_ID, scope_request_id
from tapevault.http.requestlog import RequestLog
from tapevault.runtime import Runtime, open_runtime
from tests.dialects import Customer, asgi_client, customer, local
from tests.server import Server
from tests.support import Sender, credentials, make_session, new_session, wait_for, ws_url

GENERATED = re.compile(r"[0-9a-f]{8}-[0-9a-f]+")
FIELDS = {"at_ms", "request_id", "method", "route", "status", "bytes", "duration_ms"}


class Lines(logging.Handler):
    """The request log's lines, parsed, as the writer thread hands them over."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += [json.loads(text) for text in record.getMessage().splitlines()]

    def of(self, request_id: str) -> dict[str, Any]:
        found: dict[str, Any] = wait_for(
            lambda: next((x for x in self.lines if x.get("request_id") == request_id), None),
            what=f"the log line of request {request_id}",
            every=0.01,
        )
        return found


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger("tapevault.request")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def who(runtime: Runtime, clock: FixedClock) -> Customer:
    return customer(runtime, clock)


async def played(client: httpx.AsyncClient, runtime: Runtime, who: Customer) -> str:
    """A finalized recording's signed URL (absolute)."""
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id = created.json()["ambient_session_id"]
    await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.5),
    )
    runtime.worker.run_until_idle()
    await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=who.suki)
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki)
    url: str = urls.json()["recordings"][0]["presigned_url"]
    return url


# --- X-Request-Id ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        "",
        "a" * 129,
        "two words",
        "bad\r\nheader",
        "n\u00e4me",
        '"quoted"',
        "a,b",
        "semi;colon",
        "\x00",
    ],
)
def test_a_hostile_request_id_is_replaced_never_cut_or_kept(given: str) -> None:
    """Only 1-128 token characters are taken; anything else gets a fresh id of our own."""
    scope = {"headers": [(b"x-request-id", given.encode("utf-8"))]}
    assert GENERATED.fullmatch(scope_request_id(scope))


def test_a_request_id_is_settled_once_and_two_headers_are_none() -> None:
    """A proxy's token id is kept as it is and stays the request's id; two headers (which
    RFC 9110 would join with a comma) are not an id."""
    proxy = "req-7f3a_b.c~d!#$%&'*+^`|"
    scope: dict[str, Any] = {"headers": [(b"x-request-id", proxy.encode())]}
    assert scope_request_id(scope) == proxy == scope[REQUEST_ID]
    scope["headers"] = []
    assert scope_request_id(scope) == proxy
    twice = {"headers": [(b"x-request-id", b"a"), (b"x-request-id", b"b")]}
    assert GENERATED.fullmatch(scope_request_id(twice))
    fresh = {scope_request_id({"headers": []}) for _ in range(100)}
    assert len(fresh) == 100


async def test_every_answer_carries_the_request_id_and_its_access_record_too(
    client: httpx.AsyncClient,
    runtime: Runtime,
    who: Customer,
    access_log: MemoryAccessLog,
) -> None:
    """200, 201, 401, 404, 405, media 206/304/416/403, tus: the same id in the answer and in the
    access record; a given id comes back unchanged, a bad one is replaced."""
    url = local(await played(client, runtime, who))
    etag = (await client.get(url)).headers["etag"]
    probes: list[tuple[str, str, dict[str, str], int]] = [
        ("GET", "/healthz", {}, 200),
        ("POST", "/api/v1/ambient/session/create", who.suki, 201),
        ("POST", "/api/v1/ambient/session/create", {}, 401),
        ("GET", "/no/such/path", {}, 404),
        ("DELETE", "/openapi.json", {}, 405),
        ("GET", url, {"range": "bytes=0-99"}, 206),
        ("GET", url, {"if-none-match": etag}, 304),
        ("GET", url, {"range": "bytes=999999999-"}, 416),
        ("GET", url.replace("s=", "s=x"), {}, 403),
        ("OPTIONS", "/api/v1/uploads", {"tus-resumable": "1.0.0"}, 204),
        ("POST", "/api/v1/uploads", {"tus-resumable": "1.0.0"}, 401),
    ]
    for n, (method, path, headers, status) in enumerate(probes):
        given = f"probe-{n}"
        answer = await client.request(method, path, headers={**headers, "x-request-id": given})
        assert answer.status_code == status, (method, path, answer.text)
        assert answer.headers.get_list("x-request-id") == [given], (method, path)
        bad = await client.request(method, path, headers={**headers, "x-request-id": "a b"})
        made = bad.headers["x-request-id"]
        assert GENERATED.fullmatch(made), (method, path, made)
    runtime.worker.run_until_idle()
    recorded = {e.actor.request_id for e in access_log.events}
    # Every audited probe's record carries its id (healthz, 404, 405 and OPTIONS record nothing).
    for n in (1, 2, 5, 6, 7, 8, 10):
        assert f"probe-{n}" in recorded, (n, sorted(r for r in recorded if r))
    assert None not in recorded


# --- the line -------------------------------------------------------------------------------------


async def test_a_line_names_the_route_template_never_the_path_query_or_credentials(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, lines: Lines
) -> None:
    """Fields and values of the lines of an API call, a media read and a refusal; no token,
    key, signature, query string or raw id appears in any line."""
    url = local(await played(client, runtime, who))
    recording_id = url.split("/media/")[1].split(".wav")[0]
    signature = url.split("&s=")[1]
    media = await client.get(url, headers={"range": "bytes=0-99", "x-request-id": "media-1"})
    api = await client.get(
        f"/v1/{who.ws}/recordings/CA{'0' * 32}/metadata",
        headers={**who.bearer, "x-request-id": "a"},
    )
    refused = await client.get(
        "/api/v1/ambient/session/nope", headers={"sdp_suki_token": "forged", "x-request-id": "r"}
    )
    line = lines.of("media-1")
    assert set(line) == FIELDS | {"tenant", "client"}
    assert line["method"] == "GET" and line["route"] == "/media/{recording_id}.wav"
    assert line["status"] == 206 and line["bytes"] == len(media.content) == 100
    assert line["tenant"] == who.tenant.partner_id
    assert line["duration_ms"] >= 0 and isinstance(line["at_ms"], int)
    api_line = lines.of("a")
    assert api_line["route"] == "/v1/{workspace_id}/recordings/{call_sid}/metadata"
    assert api_line["status"] == api.status_code and api_line["tenant"] == who.tenant.partner_id
    refused_line = lines.of("r")
    assert refused_line["status"] == refused.status_code == 401
    assert "tenant" not in refused_line
    assert refused_line["route"] == "/api/v1/ambient/session/{session_id}"
    text = "\n".join(json.dumps(x) for x in lines.lines)
    for secret in (
        signature,
        who.suki["sdp_suki_token"],
        who.api_key,
        recording_id,
        "forged",
        "range",
    ):
        assert secret not in text


async def test_the_hot_path_and_unknown_paths_log_a_template_or_nothing(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, lines: Lines
) -> None:
    """The recording-URL endpoint (found without the router) logs its template; a path no route
    matches logs ``route: null``, never what the client typed."""
    await client.get(
        "/api/v1/ambient/session/s1/recording", headers={**who.suki, "x-request-id": "hot"}
    )
    await client.get("/secret-looking/tvk_abcdef", headers={"x-request-id": "none"})
    assert lines.of("hot")["route"] == "/api/v1/ambient/session/{session_id}/recording"
    assert lines.of("none")["route"] is None
    assert "tvk_abcdef" not in json.dumps(lines.lines)


async def test_request_log_off_writes_no_line_but_keeps_the_id(
    settings: Settings, clock: FixedClock, access_log: MemoryAccessLog, lines: Lines
) -> None:
    """``TAPEVAULT_REQUEST_LOG=off``: no line at all; X-Request-Id still answered and recorded."""
    quiet = open_runtime(
        dataclasses.replace(settings, request_log=False), clock=clock, access_log=access_log
    )
    try:
        async with asgi_client(quiet) as client:
            answer = await client.post(
                "/api/v1/ambient/session/create", headers={"x-request-id": "q"}
            )
            await client.get("/healthz")
    finally:
        quiet.close()
    assert answer.status_code == 401 and answer.headers["x-request-id"] == "q"
    await asyncio.sleep(0.1)
    assert not [x for x in lines.lines if x.get("request_id") == "q" or x["route"] == "/healthz"]
    assert [e.actor.request_id for e in access_log.events] == ["q"]


def test_the_setting_takes_on_or_off_only() -> None:
    """Anything but on/off stops start-up, naming the variable."""
    assert Settings.load({}, env={"TAPEVAULT_REQUEST_LOG": "off"}).request_log is False
    assert Settings.load({}, env={}).request_log is True
    with pytest.raises(ConfigError, match="TAPEVAULT_REQUEST_LOG"):
        Settings.load({}, env={"TAPEVAULT_REQUEST_LOG": "json"})


# --- never blocking, never unbounded ------------------------------------------------------------


class Stuck(logging.Handler):
    """A handler whose output is stuck (a full pipe to a log shipper) until released."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.release = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.release.wait()
        self.messages.append(record.getMessage())


def test_a_stuck_output_never_blocks_the_writer_and_memory_stays_bounded() -> None:
    """With the output stuck, ``write`` returns at once; past the capacity lines are dropped and
    counted, and when the output moves again it is told how many."""
    logger = logging.getLogger("tapevault.request.test-stuck")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    stuck = Stuck()
    logger.addHandler(stuck)
    sink = RequestLog(logger, capacity=10)
    try:
        for n in range(1000):
            sink.write({"n": n})
        assert len(sink._pending) <= 10
        assert sink.dropped >= 989
        stuck.release.set()
        sink.close()
        told = [json.loads(text) for m in stuck.messages for text in m.splitlines()]
        assert sum(m.get("dropped", 0) for m in told) + sum("n" in m for m in told) == 1000
        assert any("dropped" in m for m in told) and sink.dropped == 0  # told, and reset
    finally:
        stuck.release.set()
        logger.removeHandler(stuck)


async def test_shutdown_waits_for_the_last_lines_but_not_for_a_stuck_output() -> None:
    """``drained`` returns once the writer handed everything over, or after its bound when the
    output is stuck, without blocking the event loop meanwhile."""
    logger = logging.getLogger("tapevault.request.test-drain")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    stuck = Stuck()
    logger.addHandler(stuck)
    sink = RequestLog(logger)
    try:
        sink.write({"n": 0})
        ticks = 0

        async def ticking() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(ticking())
        started = asyncio.get_running_loop().time()
        await sink.drained(0.3)
        assert asyncio.get_running_loop().time() - started >= 0.29 and ticks >= 5
        ticker.cancel()
        stuck.release.set()
        await sink.drained(5)
        assert stuck.messages == ['{"n":0}']
    finally:
        stuck.release.set()
        sink.close()
        logger.removeHandler(stuck)


def test_a_stopped_server_has_written_its_last_requests_lines(tmp_path: Path) -> None:
    """SIGTERM: the lines of the requests answered just before are in the output."""
    server = Server(tmp_path / "data").start()
    try:
        for n in range(20):
            requests.get(f"{server.base}/healthz", headers={"x-request-id": f"last-{n}"}, timeout=5)
        server.stop()
        output = server.output(200_000)
        assert all(f'"request_id":"last-{n}"' in output for n in range(20))
    finally:
        server.close()


def test_a_failing_handler_does_not_stop_the_writer() -> None:
    """A handler that raises loses what it was handed; later lines still go out."""
    logger = logging.getLogger("tapevault.request.test-failing")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    calls: list[str] = []

    class Flaky(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            calls.append(record.getMessage())
            if len(calls) == 1:
                raise OSError("disk full")

    logger.addHandler(Flaky())
    sink = RequestLog(logger)
    sink.write({"n": 0})
    wait_for(lambda: calls == ['{"n":0}'], what="the first line handed over", every=0.01)
    sink.write({"n": 1})
    sink.close()
    assert calls == ['{"n":0}', '{"n":1}']


# --- a real server: stderr, WebSocket streams, the client address ------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """One server trusting nobody's X-Forwarded-For (and serving live streams through ASGI),
    one trusting the loopback proxy (streams on the direct path, as shipped)."""
    base = tmp_path_factory.mktemp("requestlog")
    plain = Server(base / "plain").start(TAPEVAULT_DIRECT_STREAMS="off")
    proxied = Server(base / "proxied").start(TAPEVAULT_TRUSTED_PROXIES="127.0.0.1")
    try:
        yield {"plain": plain, "proxied": proxied}
    finally:
        plain.close()
        proxied.close()


def server_line(server: Server, request_id: str) -> dict[str, Any]:
    """The line of a request in a real server's output: a whole line that is one JSON object."""

    def probe() -> dict[str, Any] | None:
        for text in server.output(200_000).splitlines():
            if text.startswith("{") and f'"request_id":"{request_id}"' in text:
                found: dict[str, Any] = json.loads(text)
                return found
        return None

    return wait_for(probe, what=f"the line of {request_id} in the server's output")


def test_a_server_writes_each_line_alone_on_stderr_with_the_resolved_client(
    servers: dict[str, Server],
) -> None:
    """Lines are bare JSON (no logging prefix); X-Forwarded-For names the client only when the
    peer is a trusted proxy."""
    for name, expected in (("plain", "127.0.0.1"), ("proxied", "203.0.113.9")):
        server = servers[name]
        answer = requests.get(
            f"{server.base}/healthz",
            headers={"x-request-id": f"xff-{name}", "x-forwarded-for": "203.0.113.9"},
            timeout=10,
        )
        assert answer.headers["x-request-id"] == f"xff-{name}"
        line = server_line(server, f"xff-{name}")
        assert line["client"] == expected and line["route"] == "/healthz"


@pytest.mark.parametrize(
    ("name", "expected"), [("plain", "127.0.0.1"), ("proxied", "198.51.100.7")]
)
async def test_a_live_stream_is_one_line_when_it_ends_on_either_path(
    servers: dict[str, Server], name: str, expected: str
) -> None:
    """The handshake is answered with X-Request-Id and one line is written at the end: status
    101, close 1000, the audio bytes received, the tenant, the resolved client; a refused
    stream's line says 4401 and no tenant. Through ASGI and on the direct path alike."""
    server = servers[name]
    headers = credentials(server)
    session_id = new_session(server, headers)
    given = {"x-request-id": f"ws-{name}", "x-forwarded-for": "198.51.100.7"}
    async with connect(ws_url(server, session_id), additional_headers={**headers, **given}) as ws:
        assert ws.response is not None and ws.response.headers["x-request-id"] == f"ws-{name}"
        sender = Sender(ws)
        await ws.send(b"\x00\x01" * 3200)
        await sender.finish()
    line = server_line(server, f"ws-{name}")
    assert line["status"] == 101 and line["close"] == 1000
    assert line["received"] == 6400 + len('{"type":"end"}')  # message bytes, audio and text
    assert line["route"] == "/api/v1/ambient/session/{session_id}/stream"
    assert line["client"] == expected
    assert len(line["tenant"]) == 32
    assert line["bytes"] > 0  # the acks
    async with connect(
        ws_url(server, session_id), additional_headers={"x-request-id": f"refused-{name}"}
    ) as refused:
        with pytest.raises(websockets.ConnectionClosed):
            await refused.recv()
    line = server_line(server, f"refused-{name}")
    assert line["close"] == 4401 and "tenant" not in line
    assert headers["sdp_suki_token"] not in server.output(200_000)


def test_a_playback_through_a_server_logs_no_signature(servers: dict[str, Server]) -> None:
    """A signed URL's reads are logged by template; its query is nowhere in the output."""
    server = servers["plain"]
    headers = credentials(server)
    session_id, _ = make_session(server, headers["sdp_suki_token"])
    urls = requests.get(
        f"{server.base}/api/v1/ambient/session/{session_id}/recording", headers=headers, timeout=10
    ).json()
    url = urls["recordings"][0]["presigned_url"]
    answer = requests.get(url, headers={"range": "bytes=0-9", "x-request-id": "play"}, timeout=10)
    assert answer.status_code == 206
    line = server_line(server, "play")
    assert line["route"] == "/media/{recording_id}.wav" and line["bytes"] == 10
    output = server.output(200_000)
    assert url.split("?")[1] not in output and url.split("&s=")[1] not in output


@pytest.mark.parametrize("name", ["plain", "proxied"])
async def test_a_stream_tickets_query_is_in_no_log_line(
    servers: dict[str, Server], name: str
) -> None:
    """uvicorn logs the WebSocket handshakes it answers with their query string: a ticket (or a
    Twilio URL's signature) would be in the server's output. Only the path is."""
    server = servers[name]
    headers = credentials(server)
    session_id = new_session(server, headers)
    ticket = requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/stream-ticket",
        headers=headers,
        timeout=10,
    ).json()["ticket"]
    url = ws_url(server, session_id, f"?ticket={ticket}")
    async with connect(url, additional_headers={"x-request-id": f"ticket-{name}"}) as ws:
        sender = Sender(ws)
        await ws.send(b"\x01\x00" * 160)
        await sender.finish()
    assert server_line(server, f"ticket-{name}")["close"] == 1000
    output = server.output(500_000)
    assert ticket not in output
    if name == "plain":  # through ASGI: uvicorn's own line, without its query
        assert f'"WebSocket /api/v1/ambient/session/{session_id}/stream" [accepted]' in output
