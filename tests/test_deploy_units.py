"""The shipped systemd units and env file (``deploy/systemd``): systemd accepts them, the env
file holds only real settings that load, the stop timeouts exceed the drain, the worker stops on
SIGTERM, and the server works under the kernel's MemoryDenyWriteExecute."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from websockets.sync.client import connect

from tapevault.audio_gen import tone_wav_bytes
from tapevault.config import SETTINGS_DOC, Settings
from tests.conftest import need
from tests.server import Server, inherited_environment
from tests.support import make_session, plays, wait_available, wait_for, ws_url

pytestmark = pytest.mark.server
DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "systemd"
UNITS = ("tapevault.service", "tapevault-worker.service")
SHIPPED_BINARY = "/opt/tapevault/bin/tapevault"
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit (repeated keys kept in order)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def env_file() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "tapevault.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    """``systemd-analyze verify`` finds nothing wrong with either unit (their ExecStart pointed
    at this environment's tapevault, as an install in another place would do)."""
    analyze = shutil.which("systemd-analyze")
    need(analyze is not None, "systemd-analyze is not installed (Debian: systemd)")
    assert analyze is not None
    binary = shutil.which("tapevault") or str(Path(sys.executable).with_name("tapevault"))
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        assert text.count(SHIPPED_BINARY) == 1, name
        (tmp_path / name).write_text(text.replace(SHIPPED_BINARY, binary))
    done = subprocess.run(
        [analyze, "verify", *(str(tmp_path / name) for name in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("name", UNITS)
def test_units_are_hardened_and_wait_longer_than_the_drain(name: str) -> None:
    """Each unit has the hardening the README promises, writes only its data directory, and
    gives SIGTERM longer than the env file's shutdown grace before SIGKILL."""
    unit = unit_settings((DEPLOY / name).read_text())
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute": "yes",
        "KillSignal": "SIGTERM",
        "EnvironmentFile": "/etc/tapevault/tapevault.env",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], (name, key, unit.get(key))
    assert "@system-service" in unit["SystemCallFilter"]
    env = env_file()
    assert unit["ReadWritePaths"] == [env["TAPEVAULT_DATA_DIR"]]
    grace = Settings.load(env=env).shutdown_grace_seconds
    stop = re.fullmatch(r"(\d+)s", unit["TimeoutStopSec"][0])
    assert stop is not None and int(stop.group(1)) > grace


def test_env_file_names_only_real_settings_and_loads() -> None:
    """Every variable in the example env file, commented out or not, is a tapevault setting,
    and the active ones load (as the units would run them)."""
    text = (DEPLOY / "tapevault.env").read_text()
    named = set(re.findall(r"^#?(TAPEVAULT_[A-Z_]+)=", text, re.M))
    known = {variable for variable, _ in SETTINGS_DOC.values()}
    assert named and named <= known, named - known
    settings = Settings.load(env=env_file())
    assert settings.trusted_proxies == ("127.0.0.1/32",)
    assert settings.workers == 0 and settings.public_url.startswith("https://")


def test_worker_stops_on_sigterm(tmp_path: Path) -> None:
    """``tapevault worker`` (the worker unit) finishes on SIGTERM and exits 0."""
    env = {**inherited_environment(), "TAPEVAULT_DATA_DIR": str(tmp_path / "data")}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tapevault.cli", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: b"waiting for jobs" in log.read_bytes(), what="the worker to start")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


MDWE_SITECUSTOMIZE = f"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0):
    raise SystemExit("PR_SET_MDWE refused: errno %d" % ctypes.get_errno())
print("PR_GET_MDWE=%d" % libc.prctl({PR_GET_MDWE}, 0, 0, 0, 0), file=sys.stderr, flush=True)
"""


def mdwe_supported() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", MDWE_SITECUSTOMIZE], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


def test_server_runs_with_memory_deny_write_execute(tmp_path: Path) -> None:
    """The server under PR_SET_MDWE (the kernel's form of MemoryDenyWriteExecute=yes: no
    mapping may become writable and executable) decodes MP3 and WebM Opus uploads, takes a
    live stream, resamples and mixes a call into Kore's merged file and serves ranges: nothing
    it loads generates code."""
    need(mdwe_supported(), "the kernel has no PR_SET_MDWE (Linux 6.3+)")
    need(shutil.which("ffmpeg") is not None, "ffmpeg is not installed")
    site = tmp_path / "mdwe"
    site.mkdir()
    (site / "sitecustomize.py").write_text(MDWE_SITECUSTOMIZE)
    server = Server(tmp_path / "data").start(PYTHONPATH=str(site))
    try:
        assert f"PR_GET_MDWE={PR_MDWE_REFUSE_EXEC_GAIN}" in server.output()
        tenant = server.tenant()
        token = server.token(tenant["partner_id"])
        headers = {"sdp_suki_token": token}
        session_id, _ = make_session(server, token)  # a WAV, ended and finalized
        for suffix, args, content_type in (
            (".mp3", ["-c:a", "libmp3lame"], "audio/mpeg"),
            (".webm", ["-c:a", "libopus"], "audio/webm"),
        ):
            path = tmp_path / f"tone{suffix}"
            subprocess.run(
                ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                 "sine=frequency=440:duration=2", *args, str(path)],
                check=True, timeout=60,
            )  # fmt: skip
            created = requests.post(
                f"{server.base}/api/v1/ambient/session/create", headers=headers, timeout=10
            ).json()["ambient_session_id"]
            sent = requests.post(
                f"{server.base}/api/v1/ambient/session/{created}/audio",
                headers={**headers, "content-type": content_type},
                data=path.read_bytes(),
                timeout=30,
            )
            assert sent.status_code == 202, sent.text
            (recording,) = wait_available(server, headers, created)
            assert recording["status"] == "available", recording
        streamed = requests.post(
            f"{server.base}/api/v1/ambient/session/create", headers=headers, timeout=10
        ).json()["ambient_session_id"]
        with connect(ws_url(server, streamed), additional_headers=headers) as ws:
            ws.send(bytes(640 * 25))
            ws.send('{"type":"end"}')
            acks = [json.loads(m) for m in ws]  # until the server closes
        assert ws.close_code == 1000 and acks[-1] == {
            "type": "ack",
            "bytes": 640 * 25,
            "stored": 640 * 25,  # the close put it all in the store
        }
        # A two-channel call at two rates: resampled (libswresample) and mixed (numpy).
        call = "CA" + "d" * 32
        for channel, rate in (("inbound", 8000), ("outbound", 16000)):
            sent = requests.post(
                f"{server.base}/v1/{tenant['workspace_id']}/calls/{call}/audio",
                params={"channel": channel},
                headers={
                    "authorization": f"Bearer {tenant['api_key']}",
                    "content-type": "audio/wav",
                },
                data=tone_wav_bytes(2.0, sample_rate=rate),
                timeout=30,
            )
            assert sent.status_code == 202, sent.text
        server.wait_jobs_done()
        merged = requests.get(
            f"{server.base}/api/public/bot/{tenant['bot_id']}/v2/recordings",
            params={"sessionId": call},
            headers={"auth": server.token(tenant["partner_id"], "--kore")},
            timeout=10,
        ).json()
        assert merged["status"] == "success", merged
        plays(merged["recording"][0]["fileUrl"])
        urls = requests.get(
            f"{server.base}/api/v1/ambient/session/{session_id}/recording",
            headers=headers,
            timeout=10,
        ).json()
        plays(urls["recordings"][0]["presigned_url"])
        assert server.process is not None and server.process.poll() is None
        assert "Traceback" not in server.output()
    finally:
        server.stop()
