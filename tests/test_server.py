"""A real server process: the seeds' own examples, curl ranges, the CLI and the demo."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tapevault.db.engine import head_revision
from tests.conftest import need
from tests.seeds import SEEDS_DIR, adapt, python_example
from tests.server import Server, free_port, tapevault
from tests.support import make_session, plays, wait_for

pytestmark = pytest.mark.server
SEEDS = SEEDS_DIR


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("srv")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "seed", ["suki-ambient-session-recording.md", "suki-form-filling-session-recording.md"]
)
def test_seed_python_example_runs(server: Server, tmp_path: Path, seed: str) -> None:
    """The seed's own Python example prints streamable, id, URL, expiry and sequence."""
    tenant = server.tenant()
    token = server.token(tenant["partner_id"])
    session_id, _ = make_session(server, token)
    script = tmp_path / "example.py"
    script.write_text(adapt(python_example(seed), server.base, session_id, token))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Streamable: True" in out
    assert re.search(r"Recording ID: [0-9A-HJKMNP-TV-Z]{26}\n", out)
    assert re.search(rf"Presigned URL: {re.escape(server.base)}/media/\S+\.wav\?\S+", out)
    assert re.search(r"Expires at: \d{10}\n", out)
    assert "Sequence: 1" in out
    url = re.search(r"Presigned URL: (\S+)", out)
    assert url is not None
    plays(url.group(1))


def test_curl_range_returns_exact_bytes(server: Server, tmp_path: Path) -> None:
    """`curl -r 1000-1999 <presigned_url>` returns exactly those bytes of the stored file."""
    need(shutil.which("curl") is not None, "curl is not installed")
    tenant = server.tenant()
    token = server.token(tenant["partner_id"])
    session_id, wav = make_session(server, token)
    urls = requests.get(
        f"{server.base}/api/v1/ambient/session/{session_id}/recording",
        headers={"sdp_suki_token": token},
        timeout=10,
    ).json()
    url = urls["recordings"][0]["presigned_url"]
    stored = next((server.data_dir / "audio").rglob("*.wav")).read_bytes()
    assert stored == wav  # a canonical upload is stored byte for byte
    out = subprocess.run(
        ["curl", "-sf", "-r", "1000-1999", url], capture_output=True, timeout=30, check=True
    )
    assert out.stdout == stored[1000:2000]
    whole = subprocess.run(["curl", "-sf", url], capture_output=True, timeout=30, check=True)
    assert hashlib.sha256(whole.stdout).hexdigest() == hashlib.sha256(stored).hexdigest()


def test_token_issue_options(server: Server) -> None:
    """token issue honours --ttl and --provider-id; an unknown partner is a clear error."""
    import jwt

    tenant = server.tenant(retention="30s")
    assert tenant["retention_seconds"] == 30
    token = server.token(tenant["partner_id"], "--ttl", "2m", "--provider-id", "dr-1")
    claims = jwt.decode(token, tenant["jwt_secret"], algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 120
    assert claims["provider_id"] == "dr-1" and claims["partner_id"] == tenant["partner_id"]
    bad = subprocess.run(
        [sys.executable, "-m", "tapevault.cli", "token", "issue", "--partner", "nope"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1 and "no tenant" in bad.stderr


def test_invalid_setting_fails_at_startup_naming_it(tmp_path: Path) -> None:
    """A bad setting stops the command with a message naming the variable."""
    done = subprocess.run(
        [sys.executable, "-m", "tapevault.cli", "migrate", "--data-dir", str(tmp_path)],
        env={"PATH": "/usr/bin:/bin", "TAPEVAULT_PUBLIC_URL": "not a url"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "TAPEVAULT_PUBLIC_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_migrate_and_key_rotation(tmp_path: Path) -> None:
    """migrate reports the revision; keys rotate and the old one can then be removed."""
    env = {"PATH": "/usr/bin:/bin", "TAPEVAULT_DATA_DIR": str(tmp_path)}
    assert f"database at revision {head_revision()}" in tapevault("migrate", env=env)
    first = tapevault("keys", "list", env=env).split()[0]
    tapevault("keys", "rotate", env=env)
    listed = tapevault("keys", "list", env=env).splitlines()
    assert len(listed) == 2 and listed[0].endswith("(signing)") and listed[1] == first
    tapevault("keys", "remove", first, env=env)
    assert first not in tapevault("keys", "list", env=env)


def test_demo_sets_up_and_prints_commands(tmp_path: Path) -> None:
    """`tapevault demo --no-serve` uploads a conversation and prints a token and commands."""
    port = free_port()
    out = tapevault(
        "demo",
        "--no-serve",
        "--data-dir",
        str(tmp_path),
        "--port",
        str(port),
        env={"PATH": "/usr/bin:/bin"},
        timeout=180,
    )
    assert "sdp_suki_token" in out and "curl -r 1000-1999" in out
    assert f"http://127.0.0.1:{port}/media/" in out
    assert "Authorization: Bearer tvk_" in out and "/v2/recordings?sessionId=CA" in out
    assert "tapevault audit verify" in out
    match = re.search(r"one recording, ([\d.]+) s", out)
    assert match and 50 <= float(match.group(1)) <= 70


def test_several_processes_share_the_port(tmp_path: Path) -> None:
    """TAPEVAULT_PROCESSES=2: both processes answer, uploads finish, URLs stream, the access log
    stays one verifiable chain written by both."""
    srv = Server(tmp_path / "data").start(TAPEVAULT_PROCESSES="2")
    try:
        tenant = srv.tenant()
        token = srv.token(tenant["partner_id"])
        session_id, wav = make_session(srv, token)
        for _ in range(20):
            urls = requests.get(
                f"{srv.base}/api/v1/ambient/session/{session_id}/recording",
                headers={"sdp_suki_token": token},
                timeout=10,
            )
            assert urls.status_code == 200
        media = requests.get(urls.json()["recordings"][0]["presigned_url"], timeout=10)
        assert media.content == wav
    finally:
        srv.stop()
    verified = tapevault("audit", "verify", env=srv.env)
    assert "verifies" in verified


def if_gone(url: str, headers: dict[str, str] | None = None) -> requests.Response | None:
    """The answer to ``GET url`` if it is 410 Gone, else None."""
    response = requests.get(url, headers=headers or {}, timeout=10)
    return response if response.status_code == 410 else None


def test_short_retention_on_the_wall_clock(tmp_path: Path) -> None:
    """A tenant keeping audio 8 s, a server purging every second: the URL endpoint turns 410 on
    time, the media URL (capped at the retention end) has expired with it, the worker purges the
    file by itself, and the tombstone and the access history stay readable."""
    srv = Server(tmp_path / "data").start(TAPEVAULT_PURGE_INTERVAL="1s")
    try:
        tenant = srv.tenant(retention="8s")  # room for upload and processing on a slow machine
        token = srv.token(tenant["partner_id"])
        headers = {"sdp_suki_token": token}
        session_id, _ = make_session(srv, token, seconds=1.0)
        urls = requests.get(
            f"{srv.base}/api/v1/ambient/session/{session_id}/recording", headers=headers, timeout=10
        )
        assert urls.status_code == 200
        media = urls.json()["recordings"][0]["presigned_url"]
        recording_id = urls.json()["recordings"][0]["recording_id"]
        assert requests.get(media, timeout=10).status_code == 200
        expires = requests.get(
            f"{srv.base}/api/v1/ambient/session/{session_id}", headers=headers, timeout=10
        ).json()["recordings"][0]["expires_at"]  # whole seconds, rounded down
        # The scenario is the wall clock: wait out the retention, then poll for its effects.
        time.sleep(max(0.0, expires + 1 - time.time()) + 0.05)  # just past expires_at
        endpoint = f"{srv.base}/api/v1/ambient/session/{session_id}/recording"
        gone = wait_for(lambda: if_gone(endpoint, headers), 10, "410 from the URL endpoint")
        assert gone.json()["reason"] == "expired"
        assert f"&e={expires}&" in media  # the URL never promised more than retention
        assert requests.get(media, timeout=10).status_code == 403  # so it expired with it
        bearer = {"authorization": f"Bearer {tenant['api_key']}"}
        wait_for(
            lambda: not list((srv.data_dir / "audio").rglob("*.wav")),
            what="the worker to purge the audio file",
        )
        view = requests.get(f"{srv.base}/api/v1/sessions/{session_id}", headers=bearer, timeout=10)
        (tomb,) = view.json()["recordings"]
        assert tomb["status"] == "expired" and tomb["purged_at"]
        history = requests.get(
            f"{srv.base}/api/v1/recordings/{recording_id}/access", headers=bearer, timeout=10
        ).json()["records"]
        assert {"recording.urls_issue", "retention.purge"} <= {r["action"] for r in history}
    finally:
        srv.stop()
