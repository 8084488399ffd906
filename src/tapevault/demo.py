"""``tapevault demo``: a working vault in one command, on the embedded default.

Creates a demo tenant, starts the server, uploads a generated one-minute doctor/patient
conversation through the public API twice — as a Suki ambient session (create, upload, end) and
as the caller channel of a call (Amigo's upload) — and prints the credentials of all three
dialects with copy-paste commands that fetch URLs, stream, download and read the access log.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvicorn

from tapevault.audio_gen import conversation_wav
from tapevault.auth.kore import issue_kore_token
from tapevault.auth.suki import issue_token
from tapevault.config import Settings
from tapevault.core import policy
from tapevault.runtime import open_runtime, server_options

DEMO_CALL = "CAdemo0000000000000000000000000001"


def _call(
    method: str, url: str, token: str, body: bytes | None = None, header: str = "sdp_suki_token"
) -> Any:
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - our own URL
    request.add_header(header, token)
    if body is not None:
        request.add_header("Content-Type", "audio/wav")
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return json.loads(response.read())


def _wait_completed(base: str, session_id: str, token: str, timeout: float = 60.0) -> Any:
    """Uploads are finalized by the background worker; wait until the session is completed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session = _call("GET", f"{base}/api/v1/ambient/session/{session_id}", token)
        if session["status"] in ("completed", "failed"):
            return session
        time.sleep(0.1)
    raise RuntimeError("the demo upload was not finalized in time")


def _wait_healthy(base: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2):  # noqa: S310
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the demo server did not start")


def run_demo(settings: Settings, *, serve: bool, log_level: str) -> int:
    runtime = open_runtime(settings)
    created_tenant = runtime.vault.tenants.create("demo", policy.DEFAULT_RETENTION_SECONDS)
    partner, api_key = created_tenant.tenant, created_tenant.api_key
    token = issue_token(partner, now=time.time(), ttl_seconds=24 * 3600, provider_id="demo-doctor")
    kore_token = issue_kore_token(partner, now=time.time(), ttl_seconds=24 * 3600)
    # The same protocols and limits as ``serve``.
    config = uvicorn.Config(runtime.asgi(background=True), **server_options(settings, log_level))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{settings.host}:{settings.port}"
    _wait_healthy(base)

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "conversation.wav"
        voices = conversation_wav(wav, seconds=60.0)
        created = _call("POST", f"{base}/api/v1/ambient/session/create", token, b"")
        session_id = created["ambient_session_id"]
        audio = wav.read_bytes()
        _call("POST", f"{base}/api/v1/ambient/session/{session_id}/audio", token, audio)
        _call("POST", f"{base}/api/v1/ambient/session/{session_id}/end", token, b"")
        _call(
            "POST",
            f"{base}/v1/{partner.workspace_id}/calls/{DEMO_CALL}/audio?channel=inbound",
            f"Bearer {api_key}",
            audio,
            header="Authorization",
        )
    session = _wait_completed(base, session_id, token)
    uploaded = session["recordings"][0]
    urls = _call("GET", f"{base}/api/v1/ambient/session/{session_id}/recording", token)
    presigned = urls["recordings"][0]["presigned_url"]
    public = settings.public_url
    q_token = shlex.quote(token)
    print(
        f"""
tapevault demo is running at {public}
  data directory : {settings.data_dir}
  partner_id     : {partner.partner_id}
  session        : {session_id} (one recording, {uploaded["duration_ms"] / 1000:.1f} s, voices: {voices})

sdp_suki_token (valid 24 h):
{token}

Fetch streaming URLs (add ?download=true for a download URL):
  curl -s -H "sdp_suki_token: {token}" {public}/api/v1/ambient/session/{session_id}/recording

Play or seek (this URL expires at {urls["recordings"][0]["expires_at"]}):
  curl -r 1000-1999 -o part.bin '{presigned}'
  ffplay '{presigned}'

Download the whole file:
  curl -s -H "sdp_suki_token: {q_token}" '{public}/api/v1/ambient/session/{session_id}/recording?download=true' \\
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["recordings"][0]["presigned_url"])' \\
    | xargs curl -OJ

The same audio as the caller channel of call {DEMO_CALL}:
  Amigo (workspace {partner.workspace_id}, admin API key shown once):
    curl -s -H "Authorization: Bearer {api_key}" {public}/v1/{partner.workspace_id}/recordings/{DEMO_CALL}/urls
    curl -s -H "Authorization: Bearer {api_key}" {public}/v1/{partner.workspace_id}/recordings/{DEMO_CALL}/metadata
  Kore (bot {partner.bot_id}, JWT valid 24 h):
    curl -s -H "auth: {kore_token}" '{public}/api/public/bot/{partner.bot_id}/v2/recordings?sessionId={DEMO_CALL}'

Who listened to what (the tamper-evident access log):
  curl -s -H "Authorization: Bearer {api_key}" '{public}/api/v1/audit?limit=20'
  tapevault audit verify --data-dir {shlex.quote(str(settings.data_dir))}
""",
        flush=True,
    )
    if not serve:
        server.should_exit = True
        thread.join(timeout=10)
        return 0
    print("Press Ctrl-C to stop.", file=sys.stderr, flush=True)
    try:
        while thread.is_alive():
            thread.join(timeout=0.5)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(timeout=10)
    return 0
