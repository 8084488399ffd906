"""Real-time ingest over WebSocket against a real server: durable acks, close codes, recovery."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tapevault.ingest.pcm import expand
from tests.server import Server
from tests.support import (
    Sender,
    credentials,
    new_session,
    stored_pcm,
    until,
    wait_available,
    ws_url,
)

pytestmark = pytest.mark.server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


async def test_stream_is_stored_exactly_and_acknowledged(server: Server) -> None:
    """Every byte sent is acknowledged and stored; reconnecting makes recordings 1, 2."""
    headers = credentials(server)
    session_id = new_session(server, headers)
    sent: list[bytes] = []
    for _ in range(2):
        payload = random.randbytes(640 * 50)
        async with connect(ws_url(server, session_id), additional_headers=headers) as ws:
            sender = Sender(ws)
            for i in range(0, len(payload), 640):
                await ws.send(payload[i : i + 640])
            await sender.finish()
        assert sender.acked == len(payload)
        sent.append(payload)
    requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/end", headers=headers, timeout=10
    )
    recordings = wait_available(server, headers, session_id)
    assert [r["sequence_number"] for r in recordings] == [1, 2]
    for recording, payload in zip(recordings, sent, strict=True):
        assert recording["status"] == "available"
        assert recording["source_format"] == "stream/pcm_s16le"
        assert stored_pcm(server, recording, session_id) == payload
        assert recording["duration_ms"] == 1000


async def test_mulaw_stream_is_expanded_to_pcm16(server: Server) -> None:
    """A μ-law stream is stored as 16-bit PCM at its own rate (G.711 expansion)."""
    headers = credentials(server)
    session_id = new_session(server, headers)
    payload = bytes(range(256)) * 40
    url = ws_url(server, session_id, "?encoding=pcm_mulaw&sample_rate=8000&channels=1")
    async with connect(url, additional_headers=headers) as ws:
        sender = Sender(ws)
        await ws.send(payload)
        await sender.finish()
    recording = wait_available(server, headers, session_id)[0]
    assert recording["sample_rate"] == 8000 and recording["bits_per_sample"] == 16
    assert stored_pcm(server, recording, session_id) == expand("pcm_mulaw", payload)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?encoding=opus", 4400),
        ("?sample_rate=96000", 4400),
        ("?channels=3", 4400),
    ],
)
async def test_bad_parameters_close_4400(server: Server, query: str, code: int) -> None:
    """Bad parameters close the socket with 4400 and a reason."""
    headers = credentials(server)
    session_id = new_session(server, headers)
    async with connect(ws_url(server, session_id, query), additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == code
    assert info.value.rcvd.reason


async def test_auth_session_and_frame_errors(server: Server) -> None:
    """Bad token 4401, unknown session 4404, ended session 4409, partial frame 4400."""
    headers = credentials(server)
    session_id = new_session(server, headers)

    async def close_code(url: str, hdrs: dict[str, str], send: bytes | None = None) -> int:
        async with connect(url, additional_headers=hdrs) as ws:
            if send is not None:
                await ws.send(send)
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.recv()
        assert info.value.rcvd is not None
        return info.value.rcvd.code

    assert await close_code(ws_url(server, session_id), {"sdp_suki_token": "x.y.z"}) == 4401
    assert await close_code(ws_url(server, "no-such-session"), headers) == 4404
    assert await close_code(ws_url(server, session_id), headers, b"\x00" * 641) == 4400
    requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/end", headers=headers, timeout=10
    )
    assert await close_code(ws_url(server, session_id), headers) == 4409


async def test_stream_ticket_is_single_use(server: Server) -> None:
    """A browser-style ticket opens one stream, once."""
    headers = credentials(server)
    session_id = new_session(server, headers)
    ticket = requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/stream-ticket",
        headers=headers,
        timeout=10,
    ).json()["ticket"]
    url = ws_url(server, session_id, f"?ticket={ticket}")
    async with connect(url) as ws:
        sender = Sender(ws)
        await ws.send(b"\x01\x00" * 160)
        await sender.finish()
    assert sender.acked == 320
    async with connect(url) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401


async def test_sigkill_keeps_every_acknowledged_byte(tmp_path: Path) -> None:
    """Kill -9 with 20 open streams; after restart every acked byte is in the recovered
    recordings, which then end and serve normally."""
    server = Server(tmp_path / "data").start()
    headers = credentials(server)
    sessions = [new_session(server, headers) for _ in range(20)]
    payloads = {s: random.randbytes(640 * 100) for s in sessions}
    senders: dict[str, Sender] = {}
    sockets = []
    try:
        for session_id in sessions:
            ws = await connect(ws_url(server, session_id), additional_headers=headers)
            sockets.append(ws)
            senders[session_id] = Sender(ws)
        for i in range(0, 640 * 100, 640):
            for session_id in sessions:
                await senders[session_id].ws.send(payloads[session_id][i : i + 640])
            await asyncio.sleep(0.002)
        await until(
            lambda: all(sender.acked for sender in senders.values()),
            what="an acknowledgement on every stream",
        )
        acked = {s: senders[s].acked for s in sessions}
        server.kill()
        for sender in senders.values():
            await sender.reader
    finally:
        server.kill()
    assert all(acked.values()), "every stream had acknowledged bytes before the kill"
    server.start()
    try:
        for session_id in sessions:
            ended = requests.post(
                f"{server.base}/api/v1/ambient/session/{session_id}/end",
                headers=headers,
                timeout=10,
            )
            assert ended.status_code == 200
        for session_id in sessions:
            recording = wait_available(server, headers, session_id)[0]
            assert recording["status"] == "available" and recording["recovered"] is True
            pcm = stored_pcm(server, recording, session_id)
            assert len(pcm) >= acked[session_id]
            assert pcm == payloads[session_id][: len(pcm)]
            urls = requests.get(
                f"{server.base}/api/v1/ambient/session/{session_id}/recording",
                headers=headers,
                timeout=10,
            )
            assert urls.status_code == 200
            media = requests.get(urls.json()["recordings"][0]["presigned_url"], timeout=10)
            assert media.status_code == 200 and media.content[44:] == pcm
    finally:
        server.stop()


@pytest.mark.parametrize("end", ['{"type": "end"}', ' { "type" : "end" } ', "end"])
def test_end_message_however_it_is_spelled(end: str) -> None:
    """JSON with spaces (Python's json.dumps), padded, or the bare word all end a stream; other
    text does not."""
    from tapevault.http.stream import is_end

    assert is_end(end)
    for other in ('{"type":"ack"}', "ending", "[]", '{"type": "end"', "{" + "x" * 2000):
        assert not is_end(other)
