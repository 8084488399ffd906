"""Uploads against lies, full disks and bombs (http/uploads.py and what it calls): a body is
refused before its 202 when it cannot be kept, with a reason, and leaves nothing behind."""

from __future__ import annotations

import struct

import httpx
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.core.clock import FixedClock
from tapevault.runtime import Runtime
from tests.dialects import Customer, customer


@pytest.fixture
def who(runtime: Runtime, clock: FixedClock) -> Customer:
    return customer(runtime, clock)


async def new_session(client: httpx.AsyncClient, who: Customer) -> str:
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    assert created.status_code == 201
    session_id: str = created.json()["ambient_session_id"]
    return session_id


async def post_audio(
    client: httpx.AsyncClient, who: Customer, session_id: str, body: bytes
) -> httpx.Response:
    return await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=body,
    )


def kept_files(runtime: Runtime) -> list[str]:
    """Every file an upload may leave: spool, incoming, tus and stored audio."""
    root = runtime.settings.data_dir
    return sorted(
        str(p.relative_to(root))
        for sub in ("spool", "incoming", "tus", "audio")
        for p in (root / sub).rglob("*")
        if p.is_file()
    )


def claiming(body: bytes, declared: int) -> bytes:
    """``body`` (a WAV) with its data chunk's size field set to ``declared``."""
    blob = bytearray(body)
    struct.pack_into("<I", blob, blob.index(b"data") + 4, declared)
    return bytes(blob)


def float_wav(frames: int) -> bytes:
    """A mono 32-bit float WAV (FFmpeg's path, not the PCM fast path) of ``frames`` samples."""
    data = struct.pack(f"<{frames}f", *([0.25] * frames))
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
    chunks += struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


# --- a WAV header that lies about its size --------------------------------------------------


@pytest.mark.parametrize("kind", ["pcm", "float"])
async def test_wav_claiming_4_gb_with_1_kb_present_is_400_before_any_202(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, kind: str
) -> None:
    """A data chunk that declares ~4 GB over 1 KB of audio is refused with 400 and a reason,
    whatever the encoding, and nothing is kept (it used to be acknowledged, then failed)."""
    session_id = await new_session(client, who)
    body = tone_wav_bytes(0.03, sample_rate=16000) if kind == "pcm" else float_wav(256)
    lie = claiming(body, 0xFFFFFF00)
    response = await post_audio(client, who, session_id, lie)
    assert response.status_code == 400, response.text
    assert "truncated: header declares 4294967040 bytes" in response.json()["message"]
    assert kept_files(runtime) == []
    session = await client.get(f"/api/v1/ambient/session/{session_id}", headers=who.suki)
    assert session.json()["recordings"] == []


@pytest.mark.parametrize("declared", [0, 0xFFFFFFFF, "present+40"])
async def test_streaming_placeholders_and_small_shortfalls_are_stored_as_present(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, declared: int | str
) -> None:
    """Streaming writers' 0/0xFFFFFFFF and a claim a few bytes over the body are accepted and
    stored at the size really present."""
    session_id = await new_session(client, who)
    body = tone_wav_bytes(0.5, sample_rate=16000)
    present = len(body) - body.index(b"data") - 8
    size = present + 40 if declared == "present+40" else int(declared)
    response = await post_audio(client, who, session_id, claiming(body, size))
    assert response.status_code == 202, response.text
    runtime.worker.run_until_idle()
    session = await client.get(f"/api/v1/ambient/session/{session_id}", headers=who.suki)
    (recording,) = session.json()["recordings"]
    assert recording["status"] == "available"
    assert recording["bytes"] == 44 + present
