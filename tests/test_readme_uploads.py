"""The README's upload examples, run as written against a live server, so they never rot.

The code blocks of the README section "Uploading, dialect by dialect" are taken from the file:
the ``sh`` blocks run in order as one bash script (``set -euo pipefail``; every curl has ``-f``,
so any 4xx fails it), the ``python`` blocks with this interpreter, each in a directory holding
the files they name. Then the server must hold what they uploaded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tapevault.audio_gen import tone_wav_bytes
from tests.conftest import need
from tests.server import Server, tapevault

pytestmark = pytest.mark.server
README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Uploading, dialect by dialect"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def examples() -> list[tuple[str, str]]:
    """(language, code) of each fenced block in the section, in order."""
    text = README.read_text()
    start = text.index(SECTION) + len(SECTION)
    end = min(i for i in (text.find("\n### ", start), text.find("\n## ", start)) if i > 0)
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(text[start:end])]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


def test_the_section_has_an_example_per_dialect() -> None:
    """Suki (curl, WAV and MP3 types, a form), Amigo (its query and UUIDs), Kore and tus."""
    code = "\n".join(code for _, code in examples())
    for needle in (
        "Content-Type: audio/wav",
        "Content-Type: audio/mpeg",
        "--data-binary @",
        "-F file=@",
        "/calls/$CALL/audio?channel=inbound",
        "media_start_epoch_ms=",
        "service_id=",
        "/v2/recordings?sessionId=",
        "TusClient",
    ):
        assert needle in code, needle
    assert {language for language, _ in examples()} == {"sh", "python"}


def test_readme_upload_examples_run_against_a_live_server(server: Server, tmp_path: Path) -> None:
    """Every example succeeds as written, and the server then holds what they uploaded: three
    Suki recordings (WAV, MP3, form), a call with both channels, a merged Kore file that is a
    WAV, and the tus upload's recording."""
    need(shutil.which("curl") is not None, "curl is not installed")
    need(shutil.which("ffmpeg") is not None, "ffmpeg is not installed")
    work = tmp_path / "work"
    work.mkdir()
    (work / "visit.wav").write_bytes(tone_wav_bytes(2.0))
    (work / "caller.wav").write_bytes(tone_wav_bytes(1.0, sample_rate=8000))
    (work / "agent.wav").write_bytes(tone_wav_bytes(1.0, sample_rate=8000, freq=660.0))
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", "visit.wav", "-c:a", "libmp3lame", "visit.mp3"],
        cwd=work,
        check=True,
        timeout=60,
    )
    tenant = server.tenant()
    env = {
        **os.environ,
        "TAPEVAULT": server.base,
        "TOKEN": server.token(tenant["partner_id"]),
        "API_KEY": tenant["api_key"],
        "WORKSPACE_ID": tenant["workspace_id"],
        "BOT_ID": tenant["bot_id"],
        "KORE_JWT": tapevault(
            "token", "issue", "--tenant", tenant["partner_id"], "--kore", env=server.env
        ).strip(),
    }
    blocks = examples()
    script = "set -euo pipefail\n" + "\n".join(code for lang, code in blocks if lang == "sh")
    script += '\necho "SESSION=$SESSION"\n'
    ran = subprocess.run(
        ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}"
    session_id = ran.stdout.rsplit("SESSION=", 1)[1].strip()
    tus_sessions: list[str] = []
    for code in (code for lang, code in blocks if lang == "python"):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        tus_sessions.append(done.stdout.rsplit("to session", 1)[1].strip())

    suki = {"sdp_suki_token": env["TOKEN"]}
    session = requests.get(
        f"{server.base}/api/v1/ambient/session/{session_id}", headers=suki, timeout=10
    ).json()
    assert [r["source_format"] for r in session["recordings"]] == [
        "wav/pcm_s16le",
        "mp3",
        "wav/pcm_s16le",
    ]
    urls = requests.get(
        f"{server.base}/v1/{env['WORKSPACE_ID']}/recordings/CA5f0e3b7c9a1d4e2f8b6c0a9d7e5f3b1c/metadata",
        headers={"authorization": f"Bearer {env['API_KEY']}"},
        timeout=10,
    )
    assert urls.status_code == 200, urls.text
    merged = (work / "merged.wav").read_bytes()
    assert merged[:4] == b"RIFF" and merged[8:12] == b"WAVE"

    assert len(tus_sessions) == 1
    tus_session = requests.get(
        f"{server.base}/api/v1/ambient/session/{tus_sessions[0]}", headers=suki, timeout=10
    ).json()
    assert [r["source_format"] for r in tus_session["recordings"]] == ["wav/pcm_s16le"]
