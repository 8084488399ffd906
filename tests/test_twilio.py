"""Twilio Media Streams, with messages shaped as in Twilio's documentation."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import numpy as np
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tapevault.http import twilio
from tapevault.ingest.pcm import expand
from tests.server import Server, tapevault
from tests.support import stored_pcm, wait_available

pytestmark = pytest.mark.server
CALL_SID = "CA5f2d7c4b1e9a8d3c6b0f7e2a1d4c9b8e"
STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
LOUD = bytes([0x10, 0x90]) * 80  # 20 ms of a loud μ-law square wave at 8 kHz


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


def start_message(custom: dict[str, str]) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": "AC00000000000000000000000000000000",
                "streamSid": STREAM_SID,
                "callSid": CALL_SID,
                "tracks": ["inbound", "outbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": custom,
            },
            "streamSid": STREAM_SID,
        }
    )


def media_message(seq: int, track: str, chunk: int, timestamp: int, payload: bytes) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {
                "track": track,
                "chunk": str(chunk),
                "timestamp": str(timestamp),
                "payload": base64.b64encode(payload).decode(),
            },
            "streamSid": STREAM_SID,
        }
    )


def call_session_id(server: Server) -> str:
    db = sqlite3.connect(server.data_dir / "tapevault.db")
    try:
        row = db.execute("SELECT session_id FROM sessions WHERE external_id = ?", (CALL_SID,))
        return str(row.fetchone()[0])
    finally:
        db.close()


def energy(pcm: bytes, start_ms: int, end_ms: int) -> float:
    samples = np.frombuffer(pcm, dtype="<i2")[start_ms * 8 : end_ms * 8].astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


async def run_call(url: str, custom: dict[str, str]) -> None:
    """Caller speaks 0-1 s (one 20 ms chunk lost at 500 ms); agent speaks 1.5-2.5 s."""
    async with connect(url) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(start_message(custom))
        seq = 2
        for chunk, ts in enumerate(range(0, 1000, 20), start=1):
            if ts != 500:
                await ws.send(media_message(seq, "inbound", chunk, ts, LOUD))
                seq += 1
        for chunk, ts in enumerate(range(1500, 2500, 20), start=1):
            await ws.send(media_message(seq, "outbound", chunk, ts, LOUD))
            seq += 1
        await ws.send(
            json.dumps(
                {
                    "event": "mark",
                    "sequenceNumber": str(seq),
                    "streamSid": STREAM_SID,
                    "mark": {"name": "greeting"},
                }
            )
        )
        await ws.send(
            json.dumps(
                {
                    "event": "stop",
                    "sequenceNumber": str(seq + 1),
                    "streamSid": STREAM_SID,
                    "stop": {"accountSid": "AC0", "callSid": CALL_SID},
                }
            )
        )
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()


async def test_call_yields_aligned_inbound_and_outbound(server: Server) -> None:
    """Two recordings of the right length, gaps filled with silence, aligned on timestamps; the
    ended call's merged file is ready at Kore's first request."""
    tenant = server.tenant()
    token = server.token(tenant["partner_id"])
    await run_call(f"ws://127.0.0.1:{server.port}/twilio/media-stream", {"sdp_suki_token": token})
    headers = {"sdp_suki_token": token}
    session_id = call_session_id(server)
    recordings = wait_available(server, headers, session_id)
    by_channel = {r["channel"]: r for r in recordings}
    assert set(by_channel) == {"inbound", "outbound"}
    inbound, outbound = by_channel["inbound"], by_channel["outbound"]
    assert inbound["duration_ms"] == 1000 and outbound["duration_ms"] == 2500
    assert inbound["sample_rate"] == outbound["sample_rate"] == 8000
    assert inbound["source_format"] == "stream/pcm_mulaw"
    assert inbound["media_start_epoch_ms"] == outbound["media_start_epoch_ms"]
    assert isinstance(inbound["media_start_epoch_ms"], int)
    session = requests.get(
        f"{server.base}/api/v1/ambient/session/{session_id}", headers=headers, timeout=10
    ).json()
    assert session["status"] == "completed" and session["external_id"] == CALL_SID
    loud = energy(expand("pcm_mulaw", LOUD), 0, 20)
    pcm_in = stored_pcm(server, inbound, session_id)
    pcm_out = stored_pcm(server, outbound, session_id)
    assert energy(pcm_in, 0, 500) == pytest.approx(loud)
    assert energy(pcm_in, 500, 520) == 0  # the lost chunk is silence
    assert energy(pcm_in, 520, 1000) == pytest.approx(loud)
    assert energy(pcm_out, 0, 1500) == 0  # the agent had not spoken yet
    assert energy(pcm_out, 1500, 2500) == pytest.approx(loud)
    # The call's end queued its merge (made once the last track was processed): Kore's first
    # request for the ended call is success.
    server.wait_jobs_done()
    kore = requests.get(
        f"{server.base}/api/public/bot/{tenant['bot_id']}/v2/recordings",
        params={"sessionId": CALL_SID},
        headers={"auth": server.token(tenant["partner_id"], "--kore")},
        timeout=10,
    )
    assert kore.status_code == 200 and kore.json()["status"] == "success", kore.text


async def test_signed_stream_url_and_bad_credentials(server: Server) -> None:
    """A signed URL from `tapevault twilio url` works; a bad token, a forged signature or a
    respelt expiry (leading zero) closes with 4401."""
    tenant = server.tenant()
    url = tapevault(
        "twilio", "url", "--tenant", tenant["partner_id"], "--ttl", "1h", env=server.env
    ).strip()
    assert url.startswith(f"ws://127.0.0.1:{server.port}/twilio/media-stream?m=t&")
    await run_call(url, {})
    assert call_session_id(server)
    async with connect(f"ws://127.0.0.1:{server.port}/twilio/media-stream") as ws:
        await ws.send(start_message({"sdp_suki_token": "bad"}))
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401
    forged = url.replace("&s=", "&s=A")
    async with connect(forged) as ws:
        await ws.send(start_message({}))
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401
    respelt = url.replace("&e=", "&e=0")  # the same expiry with a leading zero
    async with connect(respelt) as ws:
        await ws.send(start_message({}))
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401


async def close_code(url: str) -> int | None:
    """How the server answers a start message on ``url`` with no token: None if it takes the
    call (it then waits for media), else the close code."""
    async with connect(url) as ws:
        await ws.send(start_message({}))
        try:
            await asyncio.wait_for(ws.recv(), 0.5)
        except TimeoutError:
            return None
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None
    return None


async def test_rs256_tenant_twilio_url_revoked_by_keys_remove(
    server: Server, tmp_path: Path
) -> None:
    """`twilio url` works for an RS256 tenant (no jwt_secret to sign with); once its signing
    key is removed with `keys remove`, the URL is refused with 4401 by the running server."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = tmp_path / "suki.pem"
    pem.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    created = tapevault(
        "tenant", "create", "rs", "--json", "--suki-public-key", str(pem), env=server.env
    )
    tenant = json.loads(created)
    assert tenant["jwt_secret"] is None and tenant["suki_algorithm"] == "RS256"
    url = tapevault("twilio", "url", "--tenant", tenant["partner_id"], env=server.env).strip()
    old_key = tapevault("keys", "list", env=server.env).split()[0]
    assert f"&k={old_key}&" in url
    await run_call(url, {})
    assert call_session_id(server)
    tapevault("keys", "rotate", env=server.env)
    tapevault("keys", "remove", old_key, env=server.env)
    deadline = time.monotonic() + 15  # every process re-reads the keys within a second
    for _ in range(100):
        code = await close_code(url)
        if code == 4401 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert code == 4401


async def test_a_second_stream_of_a_live_call_is_refused_and_ends_nothing(server: Server) -> None:
    """A second Twilio stream for the tracks of a call that is streaming gets 4400 (a channel
    takes one recording), and its refusal neither ends the call nor disturbs the first stream,
    whose audio is kept whole."""
    tenant = server.tenant()
    custom = {"sdp_suki_token": server.token(tenant["partner_id"])}
    url = f"ws://127.0.0.1:{server.port}/twilio/media-stream"
    db = sqlite3.connect(server.data_dir / "tapevault.db")

    def call_state() -> tuple[str | None, int]:
        found = db.execute(
            "SELECT s.status, count(r.recording_id) FROM sessions s "
            "LEFT JOIN recordings r ON r.session_id = s.session_id AND r.channel <> 'merged' "
            "WHERE s.external_id = ? GROUP BY s.status",
            (CALL_SID,),
        ).fetchone()
        return (found[0], found[1]) if found else (None, 0)

    try:
        async with connect(url) as first:
            await first.send(start_message(custom))
            await first.send(media_message(2, "inbound", 1, 0, LOUD))
            for _ in range(200):  # wait until both tracks are open
                if call_state()[1] == 2:
                    break
                await asyncio.sleep(0.05)
            assert call_state() == ("in_progress", 2)
            async with connect(url) as second:
                await second.send(start_message(custom))
                with pytest.raises(ConnectionClosed) as info:
                    await second.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 4400
            assert "channel" in info.value.rcvd.reason
            assert call_state() == ("in_progress", 2)  # the refused stream ended nothing
            await first.send(media_message(3, "inbound", 2, 20, LOUD))
            await first.send(json.dumps({"event": "stop", "streamSid": STREAM_SID}))
            with pytest.raises(ConnectionClosed):
                while True:
                    await first.recv()
        session_id = call_session_id(server)
        headers = {"sdp_suki_token": custom["sdp_suki_token"]}
        recordings = wait_available(server, headers, session_id)
        by_channel = {r["channel"]: r for r in recordings}
        assert set(by_channel) == {"inbound", "outbound"} and len(recordings) == 2
        assert by_channel["inbound"]["duration_ms"] == 40
        assert call_state() == ("completed", 2)
    finally:
        db.close()


async def test_the_start_deadline_holds_however_often_the_peer_chatters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The start deadline counts from the handshake, not from the last message: a peer sending
    a harmless message every 0.2 s is still closed with 4400 when the deadline passes."""
    monkeypatch.setattr(twilio, "START_DEADLINE_SECONDS", 0.6)
    monkeypatch.setattr(twilio, "MAX_MESSAGES_BEFORE_START", 1000, raising=False)
    sent: list[dict[str, Any]] = []
    messages = 0

    async def receive() -> dict[str, Any]:
        nonlocal messages
        messages += 1
        if messages == 1:
            return {"type": "websocket.connect"}
        await anyio.sleep(0.2)
        return {"type": "websocket.receive", "text": '{"event":"connected"}'}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    endpoint = twilio.TwilioMediaStream(cast(Any, None), cast(Any, None))
    with anyio.fail_after(5):
        await endpoint({"type": "websocket"}, receive, send)
    assert sent[-1] == {
        "type": "websocket.close",
        "code": 4400,
        "reason": "no start message in time",
    }
