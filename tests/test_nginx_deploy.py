"""tapevault behind real nginx with the shipped ``deploy/nginx/tapevault.conf`` (TLS with a
generated certificate): the seeds' Python examples, a WebSocket stream, a tus upload, a Range
download, Suki's underscore header, the request id, and the client address nginx vouches for
(an X-Forwarded-For the client wrote itself changes nothing, through nginx or around it)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from tusclient import client as tus
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tapevault.audio_gen import tone_wav_bytes, write_tone_wav
from tests import seeds
from tests.conftest import need
from tests.nginx import NGINX, SITE, Nginx, make_certificate, render, tls_context
from tests.server import Server, tapevault
from tests.support import Sender, make_session, plays, stored_pcm, wait_available, wait_for

pytestmark = pytest.mark.server
SUKI_PYTHON_SEEDS = ["suki-ambient-session-recording.md", "suki-form-filling-session-recording.md"]
SPOOFED = "203.0.113.77"  # what a lying client claims to be (TEST-NET-3)
UPLOAD_LIMIT = "8M"  # tapevault's own limit here; the site's is 2100m


@dataclass
class Deployment:
    server: Server
    nginx: Nginx
    cert: Path
    key: Path
    tenant: dict[str, str]
    token: str
    prefix: Path

    @property
    def base(self) -> str:
        return self.nginx.base

    @property
    def suki(self) -> dict[str, str]:
        return {"sdp_suki_token": self.token}

    @property
    def admin(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tenant['api_key']}"}

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        """An HTTPS client of nginx that trusts the test certificate, connecting from
        ``source`` (any 127.x address is this machine, and what nginx sees as the client)."""
        transport = httpx.HTTPTransport(verify=tls_context(self.cert), local_address=source)
        return httpx.Client(base_url=self.base, transport=transport, timeout=30)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One tapevault behind one nginx for the session: TLS on nginx, tapevault trusting only
    nginx's address (127.0.0.1) for X-Forwarded-For, and its public URL nginx's."""
    need(NGINX is not None, "nginx is not installed (Debian: nginx-light)")
    root = tmp_path_factory.mktemp("nginx-deploy")
    cert, key = make_certificate(root)
    server = Server(root / "data")
    prefix = root / "nginx"
    prefix.mkdir()
    site = SITE.read_text()
    proxy = Nginx(prefix, "")
    proxy.site = render(site, upstream_port=server.port, port=proxy.port, cert=cert, key=key)
    server.start(
        TAPEVAULT_TRUSTED_PROXIES="127.0.0.1",
        TAPEVAULT_PUBLIC_URL=proxy.base,
        TAPEVAULT_MAX_UPLOAD_BYTES=UPLOAD_LIMIT,
    )
    try:
        proxy.start()
        try:
            tenant = server.tenant("behind nginx")
            token = server.token(tenant["partner_id"])
            yield Deployment(server, proxy, cert, key, tenant, token, root)
        finally:
            proxy.stop()
    finally:
        server.stop()


def test_the_shipped_site_passes_nginx_t(deployment: Deployment) -> None:
    """``nginx -t`` accepts the shipped file with only the marked values filled in."""
    done = deployment.nginx.check()
    assert done.returncode == 0, done.stderr


def test_readyz_and_healthz_through_nginx(deployment: Deployment) -> None:
    """Readiness (database, schema, store) and liveness answer through the proxy."""
    with deployment.client() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "status": "ready",
            "checks": {"database": "ok", "migrations": "ok", "store": "ok"},
        }
        assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("seed", SUKI_PYTHON_SEEDS)
def test_seed_python_example_through_nginx(
    deployment: Deployment, tmp_path: Path, seed: str
) -> None:
    """The seed's own Python example, pointed at nginx (base URL and credentials only; the
    certificate through REQUESTS_CA_BUNDLE), gets an https URL of nginx that plays."""
    session_id, _ = make_session(deployment.server, deployment.token)
    script = tmp_path / "example.py"
    code = seeds.adapt(seeds.python_example(seed), deployment.base, session_id, deployment.token)
    script.write_text(code)
    env = {"REQUESTS_CA_BUNDLE": str(deployment.cert), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "Streamable: True" in done.stdout and "Sequence: 1" in done.stdout
    url = re.search(r"Presigned URL: (\S+)", done.stdout)
    assert url is not None and url.group(1).startswith(f"{deployment.base}/media/"), done.stdout
    plays(url.group(1))  # FFmpeg's own ranged requests, through nginx


def test_kore_curl_example_through_nginx(deployment: Deployment) -> None:
    """Kore's curl, placeholders filled, through nginx (``--cacert`` for the test
    certificate): a merged recording whose https URL plays."""
    need(shutil.which("curl") is not None, "curl is not installed")
    session_id, _ = make_session(deployment.server, deployment.token)
    deployment.server.wait_jobs_done()
    command = re.search(
        r"(curl --location .*?'Content-Type: application/json')",
        seeds.seed_text(seeds.KORE),
        re.S,
    )
    assert command is not None
    jwt = tapevault(
        "token", "issue", "--partner", deployment.tenant["partner_id"], "--kore",
        env=deployment.server.env,
    ).strip()  # fmt: skip
    filled = (
        command.group(1)
        .replace("https://{{host}}", deployment.base)
        .replace("{{botId}}", deployment.tenant["bot_id"])
        .replace("{{sessionId}}", session_id)
        .replace("{{JWT_TOKEN}}", jwt)
    )
    done = subprocess.run(
        ["bash", "-c", f"{filled} --silent --cacert {deployment.cert}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    body: dict[str, Any] = json.loads(done.stdout)
    assert body["status"] == "success", body
    (entry,) = body["recording"]
    assert entry["fileUrl"].startswith(f"{deployment.base}/media/")
    plays(entry["fileUrl"])


def test_range_download_through_nginx_is_byte_exact(deployment: Deployment) -> None:
    """A signed URL through nginx: the whole file, a middle range, a suffix and an unsatisfiable
    range answer exactly as RFC 9110 says, byte for byte (nginx neither buffers nor re-ranges)."""
    session_id, _ = make_session(deployment.server, deployment.token, seconds=4.0)
    with deployment.client() as client:
        listed = client.get(
            f"/api/v1/ambient/session/{session_id}/recording", headers=deployment.suki
        )
        assert listed.status_code == 200, listed.text
        url = listed.json()["recordings"][0]["presigned_url"]
        assert url.startswith(f"{deployment.base}/media/")
        whole = client.get(url)
        assert whole.status_code == 200
        stored = next((deployment.server.data_dir / "audio").rglob("*.wav")).parent
        recording_id = url.split("/media/")[1].split(".wav")[0]
        on_disk = next(stored.parent.rglob(f"{recording_id}.wav")).read_bytes()
        assert whole.content == on_disk
        size = len(on_disk)
        middle = client.get(url, headers={"range": "bytes=1000-54321"})
        assert middle.status_code == 206
        assert middle.headers["content-range"] == f"bytes 1000-54321/{size}"
        assert middle.content == on_disk[1000:54322]
        suffix = client.get(url, headers={"range": "bytes=-777"})
        assert suffix.status_code == 206 and suffix.content == on_disk[-777:]
        beyond = client.get(url, headers={"range": f"bytes={size}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{size}"


async def test_live_stream_over_wss_through_nginx(deployment: Deployment) -> None:
    """A live stream over wss:// through nginx's WebSocket upgrade: every byte acknowledged,
    a clean close (1000), and the recording holds exactly what was sent."""
    with deployment.client() as client:
        created = client.post("/api/v1/ambient/session/create", headers=deployment.suki)
        assert created.status_code == 201, created.text
        session_id = created.json()["ambient_session_id"]
    payload = random.randbytes(640 * 100)
    url = f"wss://127.0.0.1:{deployment.nginx.port}/api/v1/ambient/session/{session_id}/stream"
    async with connect(
        url, additional_headers=deployment.suki, ssl=tls_context(deployment.cert)
    ) as ws:
        sender = Sender(ws)
        for i in range(0, len(payload), 640):
            await ws.send(payload[i : i + 640])
        await sender.finish()
    assert sender.acked == len(payload)
    server = deployment.server
    requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/end",
        headers=deployment.suki,
        timeout=10,
    )
    (recording,) = wait_available(server, deployment.suki, session_id)
    assert recording["status"] == "available"
    assert stored_pcm(server, recording, session_id) == payload


def test_tus_upload_through_nginx(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tuspy uploads in chunks through nginx (PATCH bodies streamed, not buffered); the
    Location it follows is nginx's, and the stored file is the one sent."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(deployment.cert))
    with deployment.client() as client:
        session_id = client.post("/api/v1/ambient/session/create", headers=deployment.suki).json()[
            "ambient_session_id"
        ]
    audio = tmp_path / "visit.wav"
    size = write_tone_wav(audio, 20.0, sample_rate=16000)
    endpoint = tus.TusClient(f"{deployment.base}/api/v1/uploads", headers=deployment.suki)
    uploader = endpoint.uploader(
        str(audio),
        chunk_size=96 * 1024,
        metadata={"session_id": session_id, "filename": "visit.wav", "filetype": "audio/wav"},
    )
    uploader.upload()
    assert uploader.url is not None and uploader.url.startswith(
        f"{deployment.base}/api/v1/uploads/"
    )
    assert uploader.offset == size
    (recording,) = wait_available(deployment.server, deployment.suki, session_id)
    assert recording["sha256"] == hashlib.sha256(audio.read_bytes()).hexdigest()


def test_uploads_pass_nginx_and_meet_tapevaults_own_limit(deployment: Deployment) -> None:
    """A 3 MB upload (over nginx's 1 MiB default body limit) goes through; one over
    TAPEVAULT_MAX_UPLOAD_BYTES is refused by tapevault with its JSON 413, not by nginx."""
    with deployment.client() as client:
        session_id = client.post("/api/v1/ambient/session/create", headers=deployment.suki).json()[
            "ambient_session_id"
        ]
        audio = f"/api/v1/ambient/session/{session_id}/audio"
        wav = {**deployment.suki, "content-type": "audio/wav"}
        accepted = client.post(audio, headers=wav, content=tone_wav_bytes(100.0))
        assert accepted.status_code == 202, accepted.text
        too_big = client.post(audio, headers=wav, content=bytes(9 * 1024 * 1024))
        assert too_big.status_code == 413
        assert too_big.headers["content-type"] == "application/json", too_big.text
        assert "nginx" not in too_big.text


@pytest.fixture(scope="session")
def nginx_default_underscores(deployment: Deployment) -> Iterator[Nginx]:
    """The same site with ``underscores_in_headers`` removed, in front of the same server."""
    prefix = deployment.prefix / "nginx-default"
    prefix.mkdir()
    proxy = Nginx(prefix, "")
    proxy.site = render(
        SITE.read_text(),
        upstream_port=deployment.server.port,
        port=proxy.port,
        cert=deployment.cert,
        key=deployment.key,
        underscores=False,
    )
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_suki_header_needs_underscores_in_headers(
    deployment: Deployment, nginx_default_underscores: Nginx
) -> None:
    """Suki's ``sdp_suki_token`` reaches tapevault through the shipped site; through the same
    site without ``underscores_in_headers on`` nginx drops it and every Suki call is a 401."""
    with deployment.client() as client:
        created = client.post("/api/v1/ambient/session/create", headers=deployment.suki)
        assert created.status_code == 201, created.text
    transport = httpx.HTTPTransport(verify=tls_context(deployment.cert))
    with httpx.Client(base_url=nginx_default_underscores.base, transport=transport) as client:
        dropped = client.post("/api/v1/ambient/session/create", headers=deployment.suki)
    assert dropped.status_code == 401
    assert "sdp_suki_token" in dropped.json()["message"]


def url_issuance_records(deployment: Deployment, session_id: str) -> list[dict[str, Any]]:
    """The access log's URL issuance records of a session, read through the native API."""
    with deployment.client() as client:
        page = client.get(
            "/api/v1/audit", params={"session_id": session_id}, headers=deployment.admin
        )
    assert page.status_code == 200, page.text
    return [r for r in page.json()["records"] if r["action"] == "recording.urls_issue"]


def issue_urls(client: httpx.Client, deployment: Deployment, session_id: str, agent: str) -> None:
    """Ask for a session's recording URLs claiming to be ``SPOOFED`` every way a header can be
    written — twice, in another case, with underscores (which this site lets through) — as a
    recorded action."""
    headers = [
        *deployment.suki.items(),
        ("user-agent", agent),
        ("X-Forwarded-For", SPOOFED),
        ("x-forwarded-for", f"{SPOOFED}, 198.51.100.1"),
        ("X_Forwarded_For", SPOOFED),
        ("forwarded", f"for={SPOOFED}"),
    ]
    answer = client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    assert answer.status_code == 200, answer.text


def recorded_address(deployment: Deployment, session_id: str, agent: str) -> str:
    def find() -> str | None:
        for record in url_issuance_records(deployment, session_id):
            if record["user_agent"] == agent:
                return str(record["client_ip"])
        return None

    return wait_for(find, what=f"the access-log record of {agent}")


@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.2"])
def test_forwarded_for_from_the_client_is_not_believed_through_nginx(
    deployment: Deployment, source: str
) -> None:
    """Through nginx, a client's own X-Forwarded-For changes nothing: the access log records
    the address nginx saw it connect from — nginx's own address too (127.0.0.1, trusted as the
    proxy), where a naive right-to-left walk would have believed the spoofed entry."""
    session_id, _ = make_session(deployment.server, deployment.token)
    agent = f"through-nginx-from-{source}"
    with deployment.client(source) as client:
        issue_urls(client, deployment, session_id, agent)
    assert recorded_address(deployment, session_id, agent) == source


def test_forwarded_for_is_ignored_from_a_peer_that_is_not_a_proxy(deployment: Deployment) -> None:
    """Straight to tapevault (around nginx) from an address that is not a trusted proxy, the
    X-Forwarded-For header is ignored: the socket's peer is recorded."""
    session_id, _ = make_session(deployment.server, deployment.token)
    agent = "around-nginx"
    transport = httpx.HTTPTransport(local_address="127.0.0.3")
    with httpx.Client(base_url=deployment.server.base, transport=transport, timeout=30) as client:
        issue_urls(client, deployment, session_id, agent)
    assert recorded_address(deployment, session_id, agent) == "127.0.0.3"


def test_request_id_is_passed_or_made_by_nginx(deployment: Deployment) -> None:
    """The access log carries the client's X-Request-Id as nginx passed it on, or the one
    nginx made ($request_id: 32 hex digits) when the client sent none."""
    session_id, _ = make_session(deployment.server, deployment.token)
    with deployment.client() as client:
        for agent, given in (("with-id", "req-from-client-42"), ("without-id", None)):
            headers = {**deployment.suki, "user-agent": agent}
            if given:
                headers["x-request-id"] = given
            answer = client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
            assert answer.status_code == 200

    def ids() -> dict[str, str] | None:
        found = {
            r["user_agent"]: r["request_id"] for r in url_issuance_records(deployment, session_id)
        }
        return found if {"with-id", "without-id"} <= found.keys() else None

    found = wait_for(ids, what="both requests' records")
    assert found["with-id"] == "req-from-client-42"
    assert re.fullmatch(r"[0-9a-f]{32}", found["without-id"]), found


async def test_stream_refusal_records_the_address_nginx_saw(deployment: Deployment) -> None:
    """A live stream's refused handshake (a bad token) is recorded from the client nginx saw,
    not from nginx and not from the client's own X-Forwarded-For: live streams leave ASGI after
    the handshake and resolve the address on their own path."""
    with deployment.client() as client:
        session_id = client.post("/api/v1/ambient/session/create", headers=deployment.suki).json()[
            "ambient_session_id"
        ]
    url = f"wss://127.0.0.1:{deployment.nginx.port}/api/v1/ambient/session/{session_id}/stream"
    headers = {"sdp_suki_token": "not-a-token", "x-forwarded-for": SPOOFED}
    try:
        async with connect(
            url,
            additional_headers=headers,
            ssl=tls_context(deployment.cert),
            local_addr=("127.0.0.4", 0),
        ) as ws:
            await ws.recv()
    except InvalidStatus:
        pass
    except Exception as exc:  # closed with 4401 after the handshake
        assert "4401" in str(exc), exc

    def refusal() -> dict[str, Any] | None:
        out = tapevault("audit", "export", "--format", "jsonl", env=deployment.server.env)
        for line in out.splitlines():
            record = json.loads(line)
            if record.get("session_id") == session_id and record.get("status") == 401:
                return dict(record)
        return None

    record = wait_for(refusal, what="the stream refusal's record")
    assert record["client_ip"] == "127.0.0.4", record


async def test_twilio_media_stream_over_wss_through_nginx(deployment: Deployment) -> None:
    """Twilio Media Streams through nginx's WebSocket upgrade: a call's inbound track is stored
    as its recording, found by its call SID."""
    call_sid = "CA" + "e" * 32
    stream_sid = "MZ" + "0" * 32
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC" + "0" * 32,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"sdp_suki_token": deployment.token},
        },
        "streamSid": stream_sid,
    }
    chunk = base64.b64encode(bytes([0x55]) * 160).decode()  # 20 ms of μ-law
    url = f"wss://127.0.0.1:{deployment.nginx.port}/twilio/media-stream"
    async with connect(url, ssl=tls_context(deployment.cert)) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps(start))
        for n in range(50):
            media = {"track": "inbound", "chunk": str(n + 1), "timestamp": str(n * 20)}
            message = {"event": "media", "sequenceNumber": str(n + 2), "streamSid": stream_sid}
            await ws.send(json.dumps({**message, "media": {**media, "payload": chunk}}))
        stop = {"accountSid": "AC0", "callSid": call_sid}
        await ws.send(json.dumps({"event": "stop", "sequenceNumber": "52", "stop": stop}))
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()

    def recorded() -> list[dict[str, Any]] | None:
        with deployment.client() as client:
            found = client.get(
                "/api/v1/sessions", params={"external_id": call_sid}, headers=deployment.admin
            ).json()
        sessions = found.get("sessions") or []
        if not sessions:
            return None
        session = client_get_session(deployment, sessions[0]["session_id"])
        recordings: list[dict[str, Any]] = session["recordings"]
        return recordings if recordings and recordings[0]["status"] == "available" else None

    (recording,) = wait_for(recorded, what="the call's recording")
    assert recording["duration_ms"] == 1000


def client_get_session(deployment: Deployment, session_id: str) -> dict[str, Any]:
    with deployment.client() as client:
        answer = client.get(f"/api/v1/sessions/{session_id}", headers=deployment.admin)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body
