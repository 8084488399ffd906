"""tapevault.client and ``tapevault fetch`` against a real ``tapevault serve``: a download killed
halfway resumes with a Range request, survives its URL expiring, checks the sha256 (and catches
a corrupted byte); ``wait_until_ready`` waits through processing and stops at once on 410; the
README's example runs as written.

Making a URL expire mid-download, without a test-only switch in the server: URL expiry is cut
back to the recording's retention end (core/policy.py ``capped_expiry``), except under a legal
hold, which also keeps a recording served past its retention. So the test gives the session a
retention that ends a few seconds from now (its URLs then live those few seconds), sets a hold
as the download starts, and lets the URL run out between two chunks: the next range gets 403
``url_expired``, and the fresh URL the client asks for is a full-length one (held).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pty
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tapevault.audio_gen import tone_wav_bytes
from tapevault.client import Client, Gone, IntegrityError
from tests.server import Server, tapevault
from tests.support import make_session, new_session, wait_for

pytestmark = pytest.mark.server
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module; playbacks are sealed after 1 s idle so tests can read them."""
    srv = Server(tmp_path_factory.mktemp("client") / "data")
    srv.start(TAPEVAULT_PLAYBACK_IDLE="1s", TAPEVAULT_PURGE_INTERVAL="3600s")
    try:
        yield srv
    finally:
        srv.close()


def _tenant(server: Server, retention: str = "7d") -> tuple[dict[str, str], str]:
    tenant = server.tenant(retention=retention)
    return tenant, server.token(tenant["partner_id"])


def _admin(server: Server, tenant: dict[str, str]) -> Client:
    return Client(server.base, api_key=tenant["api_key"], workspace_id=tenant["workspace_id"])


def _playbacks(admin: Client, recording_id: str) -> list[dict[str, Any]]:
    page = admin.audit(recording_id=recording_id, action="media.playback", limit=1000)
    return [dict(r) for r in page.records]


def test_a_killed_download_resumes_with_a_range_request(server: Server, tmp_path: Path) -> None:
    """SIGKILL a download halfway; ``tapevault fetch`` continues its .part with one Range
    request from where it stopped (the access log shows it), and the file is the recording."""
    tenant, token = _tenant(server)
    session_id, wav = make_session(server, token, seconds=30)
    out = tmp_path / "out"
    script = f"""
import sys, time
from pathlib import Path
from tapevault.client import Client
client = Client({server.base!r}, suki_token={token!r}, chunk_bytes=32 * 1024)
recording = client.status({session_id!r}).recordings[0]
def progress(done, total):
    if done * 2 >= total:
        print("HALF", flush=True)
        time.sleep(120)
client.download(recording, Path({str(out)!r}) / recording.filename, progress=progress)
"""
    killed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout is not None
        assert killed.stdout.readline().strip() == "HALF"
        half_at = time.time()
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    part = out / f"{session_id}-1.wav.part"
    kept = part.stat().st_size
    assert len(wav) // 2 <= kept < len(wav)
    # A URL asked in another second is signed anew: the second run is its own playback record.
    wait_for(lambda: time.time() >= math.floor(half_at) + 1, what="the next second")

    env = {**server.env, "TAPEVAULT_URL": server.base, "TAPEVAULT_SUKI_TOKEN": token}
    done = subprocess.run(
        [sys.executable, "-m", "tapevault.cli", "fetch", session_id, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    target = out / f"{session_id}-1.wav"
    assert done.stdout.strip() == str(target)
    assert "sha256 checked" in done.stderr and "\r" not in done.stderr  # plain lines, no bar
    assert target.read_bytes() == wav  # a plain PCM WAV is stored bit-exact
    assert not part.exists()

    admin = _admin(server, tenant)
    recording = Client(server.base, suki_token=token).status(session_id).recordings[0]

    def both_playbacks() -> list[dict[str, Any]] | None:
        records = _playbacks(admin, recording.recording_id)
        return records if len(records) >= 2 else None

    records = wait_for(both_playbacks, what="both playbacks sealed in the access log")
    resumed = [r for r in records if r["ranges"][0][0] == kept]
    assert len(resumed) == 1, records  # the second run asked from byte `kept` on
    assert resumed[0]["ranges"] == [[kept, len(wav) - 1]], records
    assert resumed[0]["bytes_sent"] == len(wav) - kept  # the rest, not the whole file again


def test_a_url_that_expires_mid_download_is_replaced(server: Server, tmp_path: Path) -> None:
    """A URL that runs out between two chunks: 403 url_expired, a fresh URL, the download
    completes with the right sha256 (see the module docstring for how the URL is made short)."""
    tenant, token = _tenant(server)
    session_id, wav = make_session(server, token, seconds=4)
    admin = _admin(server, tenant)
    client = Client(server.base, suki_token=token, chunk_bytes=16 * 1024)
    status = client.status(session_id)
    assert status.created_at is not None
    created = status.created_at.timestamp()
    retention = math.ceil(time.time() - created) + 4
    admin.set_retention(session_id, f"{retention}s")
    retention_end = created + retention
    [first_url] = client.recording_urls(session_id, download=True)
    assert first_url.expires_at is not None
    assert first_url.expires_at.timestamp() <= retention_end  # capped: a short URL

    def progress(done: int, total: int | None) -> None:
        if not admin_held:
            admin.hold(session_id, "test: keep it served past retention")
            admin_held.append(True)
            # Let the URL in hand expire before the next chunk is asked for.
            wait_for(lambda: time.time() >= retention_end + 1, what="the URL to expire")

    def issued() -> int:
        return len(admin.audit(session_id=session_id, action="recording.urls_issue").records)

    admin_held: list[bool] = []
    before = issued()
    path = client.download(status.recordings[0], tmp_path / "a.wav", progress=progress)
    assert path.read_bytes() == wav
    assert hashlib.sha256(wav).hexdigest() == status.recordings[0].sha256
    # The first URL, and the fresh one asked for only after a 403 url_expired.
    assert issued() == before + 2


def test_the_sha256_matches_and_a_corrupted_byte_is_detected(
    server: Server, tmp_path: Path
) -> None:
    """A download equals the recording (its sha256); a .part with one flipped byte is caught
    at the end, removed, and the next run fetches it right."""
    _, token = _tenant(server)
    session_id, wav = make_session(server, token, seconds=3)
    client = Client(server.base, suki_token=token, chunk_bytes=16 * 1024)
    recording = client.status(session_id).recordings[0]
    good = client.download(recording, tmp_path / "good.wav")
    assert hashlib.sha256(good.read_bytes()).hexdigest() == recording.sha256

    [url] = client.recording_urls(session_id, download=True)
    etag = requests.head(url.url, timeout=10).headers["etag"]
    damaged = bytearray(wav[: len(wav) // 2])
    damaged[len(damaged) // 3] ^= 0x01
    target = tmp_path / "bad.wav"
    Path(f"{target}.part").write_bytes(bytes(damaged))
    Path(f"{target}.part.json").write_text(
        json.dumps({"key": f"recording:{recording.recording_id}", "etag": etag})
    )
    with pytest.raises(IntegrityError, match="sha256"):
        client.download(recording, target)
    assert not target.exists() and not Path(f"{target}.part").exists()
    assert client.download(recording, target).read_bytes() == wav


def test_wait_until_ready_waits_through_processing(tmp_path: Path) -> None:
    """With no worker running, the recording stays processing: wait_until_ready waits the
    server's Retry-After (2 s) and returns once a worker has finalized it."""
    srv = Server(tmp_path / "data")
    srv.start(TAPEVAULT_WORKERS="0")
    try:
        tenant = srv.tenant()
        token = srv.token(tenant["partner_id"])
        headers = {"sdp_suki_token": token}
        session_id = new_session(srv, headers)
        client_waits: list[float] = []

        def sleep(seconds: float) -> None:
            # Instead of sleeping: note the wait, and let a worker process the upload.
            client_waits.append(seconds)
            tapevault("worker", "--once", env=srv.env)

        with Client(srv.base, suki_token=token, sleep=sleep) as client:
            client.upload(session_id, tone_wav_bytes(1.0))
            client.end(session_id)
            assert client.status(session_id).recordings[0].status == "processing"
            status = client.wait_until_ready(session_id, timeout=60)
        assert client_waits[0] == 2.0  # the server's Retry-After, not a guess
        assert [r.status for r in status.recordings] == ["available"]
        assert status.recordings[0].sha256
    finally:
        srv.close()


def test_wait_until_ready_stops_at_once_on_410(server: Server) -> None:
    """Past retention the first answer is 410: Gone at once, with its reason, nothing waited."""
    _, token = _tenant(server, retention="2s")
    headers = {"sdp_suki_token": token}
    session_id = new_session(server, headers)
    up = requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/audio",
        headers={**headers, "content-type": "audio/wav"},
        data=tone_wav_bytes(1.0),
        timeout=30,
    )
    assert up.status_code == 202, up.text
    waits: list[float] = []
    client = Client(server.base, suki_token=token, sleep=waits.append)
    created = client.status(session_id).created_at
    assert created is not None
    wait_for(lambda: time.time() >= created.timestamp() + 3, what="retention to end")
    with pytest.raises(Gone) as gone:
        client.wait_until_ready(session_id, timeout=60)
    assert gone.value.reason == "expired"
    assert waits == []


def test_fetch_a_call_with_an_api_key_and_kore_merged(server: Server, tmp_path: Path) -> None:
    """``tapevault fetch CALL --api-key`` downloads a call's channel through Amigo's route,
    checked against the native sha256; Kore's merged file of a one-recording session is that
    recording."""
    tenant, token = _tenant(server)
    wav = tone_wav_bytes(2.0)
    call_sid = "CA" + "7" * 32
    up = requests.post(
        f"{server.base}/v1/{tenant['workspace_id']}/calls/{call_sid}/audio",
        params={"channel": "inbound"},
        headers={"authorization": f"Bearer {tenant['api_key']}", "content-type": "audio/wav"},
        data=wav,
        timeout=30,
    )
    assert up.status_code == 202, up.text
    admin = _admin(server, tenant)
    wait_for(
        lambda: all(r.status == "available" for r in admin.session(call_sid).recordings),
        what="the call's channel to be processed",
    )
    env = {**server.env, "TAPEVAULT_URL": server.base, "TAPEVAULT_API_KEY": tenant["api_key"]}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapevault.cli",
            "fetch",
            call_sid,
            "--out",
            str(tmp_path),
            "--workspace",
            tenant["workspace_id"],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).read_bytes() == wav
    assert Path(done.stdout.strip()).name == f"{call_sid}-inbound.wav"

    session_id, session_wav = make_session(server, token, seconds=2)
    kore = Client(
        server.base,
        kore_token=server.token(tenant["partner_id"], "--kore"),
        bot_id=tenant["bot_id"],
    )
    merged = kore.download_merged(session_id, tmp_path / "merged.wav")
    assert merged.read_bytes() == session_wav


def test_fetch_draws_a_progress_bar_on_a_terminal(server: Server, tmp_path: Path) -> None:
    """With stderr on a terminal, ``tapevault fetch`` redraws one bar in place up to 100 %."""
    _, token = _tenant(server)
    session_id, wav = make_session(server, token, seconds=2)
    controller, terminal = pty.openpty()
    env = {**server.env, "TAPEVAULT_URL": server.base, "TAPEVAULT_SUKI_TOKEN": token}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tapevault.cli", "fetch", session_id, "--out", str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        shown = b""
        with contextlib.suppress(OSError):  # EIO once everything written was read
            while chunk := os.read(controller, 65536):
                shown += chunk
    finally:
        os.close(controller)
    assert done.returncode == 0
    text = shown.decode()
    assert "\r" in text and f"[{'#' * 30}] 100%" in text, text
    assert Path(done.stdout.strip()).read_bytes() == wav


def _readme_example() -> str:
    """The ``python`` block of the README's "Python client" section."""
    text = README.read_text()
    section = text.split("## Python client", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None, "no python block in the README's Python client section"
    return block.group(1)


def test_the_readme_example_runs(server: Server, tmp_path: Path) -> None:
    """The README's client example, run as written: it uploads, waits, downloads and verifies."""
    _, token = _tenant(server)
    wav = tone_wav_bytes(2.0)
    (tmp_path / "visit.wav").write_bytes(wav)
    env = {
        **os.environ,
        "TAPEVAULT_URL": server.base,
        "TAPEVAULT_SUKI_TOKEN": token,
    }
    done = subprocess.run(
        [sys.executable, "-c", _readme_example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [saved] = list((tmp_path / "recordings").iterdir())
    assert saved.read_bytes() == wav
    assert hashlib.sha256(wav).hexdigest() in done.stdout
