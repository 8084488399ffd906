"""The seeds' own examples against a real server, with only base URL and credentials changed:
Suki's TypeScript snippet (run unchanged by tsx), Kore's curl, and requests built from Amigo's
OpenAPI documents. Every recording they lead to must play: FFmpeg decodes it whole, from the URL.
(Suki's Python examples run in test_server.py.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from tapevault.audio_gen import tone_wav_bytes
from tests import seeds
from tests.conftest import need
from tests.server import Server, tapevault
from tests.support import make_session, plays

pytestmark = pytest.mark.server
TSX = Path(__file__).parent / "node" / "node_modules" / ".bin" / "tsx"
CALL = "CA9a8b7c6d5e4f30211a2b3c4d5e6f7a8b"
AMIGO_CALL = "CA00112233445566778899aabbccddeeff"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("srv")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def tenant(server: Server) -> dict[str, str]:
    return server.tenant("contact centre")


def upload_call(server: Server, tenant: dict[str, str], call_sid: str) -> None:
    """A two-channel call through Amigo's upload extension, then wait for the worker."""
    bearer = {"authorization": f"Bearer {tenant['api_key']}"}
    base = f"{server.base}/v1/{tenant['workspace_id']}"
    for channel, rate, start in (("inbound", 8000, 0), ("outbound", 16000, 700)):
        response = requests.post(
            f"{base}/calls/{call_sid}/audio",
            params={"channel": channel, "media_start_epoch_ms": 1_800_000_000_000 + start},
            headers={**bearer, "content-type": "audio/wav"},
            data=tone_wav_bytes(2.0, sample_rate=rate),
            timeout=30,
        )
        assert response.status_code == 202, response.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # a call is available with its first channel: wait for both
        urls = requests.get(f"{base}/recordings/{call_sid}/urls", headers=bearer, timeout=10)
        if urls.ok and urls.json()["inbound_url"] and urls.json()["outbound_url"]:
            return
        time.sleep(0.2)
    raise AssertionError("the call's two channels did not become available")


def test_suki_typescript_example_runs(server: Server, tmp_path: Path) -> None:
    """suki-form-filling's TypeScript snippet, run by tsx, prints the recording's URL."""
    need(TSX.is_file(), "tsx is not installed (cd tests/node && npm ci)")
    text = seeds.seed_text(seeds.SUKI)
    block = re.search(r"```typescript[^\n]*\n(.*?)```", text, re.S)
    assert block is not None
    code = "\n".join(line.removeprefix("    ") for line in block.group(1).splitlines())
    tenant = server.tenant()
    token = server.token(tenant["partner_id"])
    session_id, _ = make_session(server, token)
    code = code.replace("https://sdp.suki-stage.com", server.base)
    code = code.replace("<sdp_suki_token>", token).replace("<sdp_provider_id>", "provider-123")
    code = code.replace("'123dfg-456dfg-789dfg-012dfg'", json.dumps(session_id))
    script = tmp_path / "example.mts"
    script.write_text(code)
    done = subprocess.run(
        [str(TSX), str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Streamable: true" in done.stdout
    found = re.search(r"Presigned URL: (\S+)", done.stdout)
    assert found and found.group(1).startswith(f"{server.base}/media/")
    assert re.search(r"Sequence: 1\n", done.stdout)
    plays(found.group(1))


def ended_ambient_session(server: Server, tenant: dict[str, str], uploads: int) -> str:
    """An ambient session of ``uploads`` recordings, ended (as a scribe ends its visit)."""
    headers = {"sdp_suki_token": server.token(tenant["partner_id"])}
    created = requests.post(
        f"{server.base}/api/v1/ambient/session/create", headers=headers, timeout=10
    )
    assert created.status_code == 201
    session_id: str = created.json()["ambient_session_id"]
    for _ in range(uploads):
        sent = requests.post(
            f"{server.base}/api/v1/ambient/session/{session_id}/audio",
            headers={**headers, "content-type": "audio/wav"},
            data=tone_wav_bytes(1.0),
            timeout=30,
        )
        assert sent.status_code == 202, sent.text
    ended = requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/end", headers=headers, timeout=10
    )
    assert ended.status_code == 200
    return session_id


@pytest.mark.parametrize("conversation", ["call", "ambient", "single recording"])
def test_kore_curl_example_runs(server: Server, tenant: dict[str, str], conversation: str) -> None:
    """kore-fetch-call-recording-v2's curl, placeholders filled, against a conversation whose
    audio is processed (a two-channel call, an ended ambient session of two recordings or of
    one): `success` at the very first request, and a merged file that plays."""
    need(shutil.which("curl") is not None, "curl is not installed")
    if conversation == "call":
        upload_call(server, tenant, CALL)
        session_id = CALL
    else:
        session_id = ended_ambient_session(server, tenant, 2 if conversation == "ambient" else 1)
    server.wait_jobs_done()
    text = seeds.seed_text(seeds.KORE)
    command = re.search(r"(curl --location .*?'Content-Type: application/json')", text, re.S)
    assert command is not None
    jwt = tapevault(
        "token", "issue", "--partner", tenant["partner_id"], "--kore", env=server.env
    ).strip()
    filled = (
        command.group(1)
        .replace("https://{{host}}", server.base)
        .replace("{{botId}}", tenant["bot_id"])
        .replace("{{sessionId}}", session_id)
        .replace("{{JWT_TOKEN}}", jwt)
    )
    done = subprocess.run(
        ["bash", "-c", filled + " --silent"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    body: dict[str, Any] = json.loads(done.stdout)
    assert body["status"] == "success", body  # queued as the audio became final, made since
    (entry,) = body["recording"]
    assert entry["fileName"] == f"{session_id}-merged.wav"
    plays(entry["fileUrl"])


def test_requests_built_from_amigo_openapi(server: Server, tenant: dict[str, str]) -> None:
    """Each Amigo operation, called as its OpenAPI document describes it (server URL swapped,
    Bearer key from the security scheme), answers with its documented schema, and the audio
    it points to plays."""
    upload_call(server, tenant, AMIGO_CALL)
    bearer = {"Authorization": f"Bearer {tenant['api_key']}"}
    answers: dict[str, requests.Response] = {}
    for document in seeds.amigo_documents():
        assert document["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
        ((template, item),) = document["paths"].items()
        operation = item["get"]
        values = {"workspace_id": tenant["workspace_id"], "call_sid": AMIGO_CALL}
        if "{filename}" in template:
            values["filename"] = "inbound.wav"
        path = template.format(**values)
        url = document["servers"][0]["url"].replace("https://api.platform.amigo.ai", server.base)
        response = requests.get(url + path, headers=bearer, timeout=30)
        assert response.status_code == 200, (template, response.text)
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        if schema:
            jsonschema.validate(response.json(), {**schema, "components": document["components"]})
        answers[operation["operationId"]] = response
    urls = answers["get-recording-urls"].json()
    assert urls["status"] == "available"
    for name in ("inbound_url", "outbound_url"):
        plays(urls[name])
    document = requests.get(urls["metadata_url"], timeout=10).json()
    assert document == answers["get-recording-metadata"].json()
    download = answers["download-recording-file"]
    assert download.headers["content-type"] == "audio/wav" and download.content[:4] == b"RIFF"
