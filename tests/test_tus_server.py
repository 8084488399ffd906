"""tus through the real server: an interrupted upload resumes and becomes a recording."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests
from tusclient import client as tus

from tapevault.audio_gen import write_tone_wav
from tests.server import Server
from tests.support import stored_pcm, wait_available

pytestmark = pytest.mark.server


def test_tuspy_upload_interrupted_half_way_resumes(tmp_path: Path) -> None:
    """tuspy uploads half, a new uploader resumes from that offset, and the WAV is stored."""
    server = Server(tmp_path / "data").start()
    try:
        tenant = server.tenant()
        headers = {"sdp_suki_token": server.token(tenant["partner_id"])}
        session_id = requests.post(
            f"{server.base}/api/v1/ambient/session/create", headers=headers, timeout=10
        ).json()["ambient_session_id"]
        audio = tmp_path / "visit.wav"
        size = write_tone_wav(audio, 60.0, sample_rate=16000)
        chunk = 128 * 1024
        endpoint = tus.TusClient(f"{server.base}/api/v1/uploads", headers=headers)
        first = endpoint.uploader(
            str(audio),
            chunk_size=chunk,
            metadata={"session_id": session_id, "filename": "visit.wav", "filetype": "audio/wav"},
        )
        first.upload(stop_at=size // 2)
        assert first.url and first.offset >= size // 2
        head = requests.head(first.url, headers={**headers, "Tus-Resumable": "1.0.0"}, timeout=10)
        offset = int(head.headers["Upload-Offset"])
        assert size // 2 <= offset < size

        resumed = endpoint.uploader(str(audio), chunk_size=chunk, url=first.url)
        assert resumed.offset == offset  # resumes where it stopped, not at 0
        resumed.upload()
        assert resumed.offset == size

        recording = wait_available(server, headers, session_id)[0]
        assert recording["status"] == "available" and recording["sequence_number"] == 1
        assert recording["sha256"] == hashlib.sha256(audio.read_bytes()).hexdigest()
        assert stored_pcm(server, recording, session_id) == audio.read_bytes()[44:]
    finally:
        server.stop()
