"""The live-stream fast path in a real ``tapevault serve`` (uvicorn hands the connection over
after the handshake), and the ASGI fallback with ``TAPEVAULT_DIRECT_STREAMS=off``."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import uvicorn
from websockets.asyncio.client import connect

from tapevault.auth.suki import issue_token
from tapevault.core.clock import FixedClock
from tapevault.core.model import SessionKind
from tapevault.http.wsdirect import DirectStream
from tapevault.runtime import Runtime
from tests.server import Server, listen
from tests.support import (
    Sender,
    client_frame,
    credentials,
    new_session,
    stored_pcm,
    until,
    wait_available,
    ws_url,
)

pytestmark = pytest.mark.server


@pytest.fixture(params=["direct", "asgi"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data")
    srv.start(TAPEVAULT_DIRECT_STREAMS="on" if request.param == "direct" else "off")
    try:
        yield srv
    finally:
        srv.stop()


def end_session(server: Server, headers: dict[str, str], session_id: str) -> None:
    requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/end", headers=headers, timeout=10
    )


async def test_fragmented_messages_and_pings_are_stored_exactly(server: Server) -> None:
    """Binary messages sent as several WebSocket frames are whole messages; pings are
    answered between them; what is stored is exactly what was sent."""
    headers = credentials(server)
    session_id = new_session(server, headers)
    payload = random.randbytes(640 * 30)
    async with connect(ws_url(server, session_id), additional_headers=headers) as ws:
        sender = Sender(ws)
        for i in range(0, len(payload), 640 * 3):
            chunk = payload[i : i + 640 * 3]
            await ws.send([chunk[:100], chunk[100:1500], chunk[1500:]])  # one fragmented message
            pong = await ws.ping()
            await asyncio.wait_for(pong, 10)
        await sender.finish()
    assert sender.acked == len(payload)
    end_session(server, headers, session_id)
    recording = wait_available(server, headers, session_id)[0]
    assert stored_pcm(server, recording, session_id) == payload


def raw_stream(server: Server, headers: dict[str, str], session_id: str) -> socket.socket:
    """A WebSocket opened by hand, to send what no client library would."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /api/v1/ambient/session/{session_id}/stream HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"sdp_suki_token: {headers['sdp_suki_token']}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    assert response.endswith(b"\r\n\r\n"), "nothing but the handshake before the first frame"
    return sock


def read_until_close(sock: socket.socket) -> tuple[list[int], int]:
    """(acks, close code) of everything the server sends until its close frame."""
    data, acks = b"", []
    while True:
        chunk = sock.recv(65536)
        assert chunk, "connection closed without a close frame"
        data += chunk
        while len(data) >= 2 and len(data) >= 2 + data[1]:
            opcode, payload, data = data[0] & 0x0F, data[2 : 2 + data[1]], data[2 + data[1] :]
            if opcode == 0x1:
                acks.append(int(payload.split(b":")[-1][:-1]))
            elif opcode == 0x8:
                return acks, int.from_bytes(payload[:2], "big")


async def test_frames_dribbled_byte_by_byte_and_batched_in_one_write(server: Server) -> None:
    """Frames cut anywhere by TCP, or many in one segment, are parsed the same."""
    headers = credentials(server)
    session_id = new_session(server, headers)
    payload = random.randbytes(640 * 10)
    frames = [client_frame(0x2, payload[i : i + 640]) for i in range(0, len(payload), 640)]
    sock = raw_stream(server, headers, session_id)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in frames[0]:
            sock.send(bytes((byte,)))
        sock.sendall(b"".join(frames[1:]) + client_frame(0x1, b'{"type":"end"}'))
        acks, code = await asyncio.to_thread(read_until_close, sock)
    assert code == 1000 and acks[-1] == len(payload)
    end_session(server, headers, session_id)
    recording = wait_available(server, headers, session_id)[0]
    assert stored_pcm(server, recording, session_id) == payload


async def test_a_protocol_violation_closes_1002_and_keeps_what_was_acked(server: Server) -> None:
    """An unmasked client frame is a protocol error: close 1002; the recording is still closed
    and finalized with the frames before it."""
    headers = credentials(server)
    session_id = new_session(server, headers)
    sock = raw_stream(server, headers, session_id)
    with sock:
        sock.sendall(client_frame(0x2, b"\x01\x00" * 320))
        sock.sendall(client_frame(0x2, b"\x02\x00" * 320, masked=False))
        _, code = await asyncio.to_thread(read_until_close, sock)
    assert code == 1002
    end_session(server, headers, session_id)
    recording = wait_available(server, headers, session_id)[0]
    assert stored_pcm(server, recording, session_id) in (b"", b"\x01\x00" * 320)


async def test_other_websocket_paths_still_go_through_asgi(server: Server) -> None:
    """Twilio's endpoint (ASGI either way) still answers; an unknown path is refused."""
    async with connect(f"ws://127.0.0.1:{server.port}/twilio/media-stream") as ws:
        await ws.send('{"event":"connected"}')
        await ws.send('{"event":"start","start":{"callSid":"CA1","customParameters":{}}}')
        await asyncio.wait_for(ws.wait_closed(), 10)
    assert ws.close_code == 4401
    with pytest.raises(Exception, match=r"403|HTTP"):
        async with connect(f"ws://127.0.0.1:{server.port}/api/v1/ambient/session/x/other"):
            pass


async def test_server_shutdown_acks_every_byte_then_closes_1012(tmp_path: Path) -> None:
    """On the fast path a stopping server (SIGTERM) syncs, sends the final ack and closes with
    1012. (Through ASGI uvicorn sends its 1012 first, and the tail may go unacknowledged.)"""
    server = Server(tmp_path / "data").start()
    try:
        headers = credentials(server)
        session_id = new_session(server, headers)
        payload = random.randbytes(640 * 20)
        async with connect(ws_url(server, session_id), additional_headers=headers) as ws:
            sender = Sender(ws)
            for i in range(0, len(payload), 640):
                await ws.send(payload[i : i + 640])
            await until(lambda: sender.acked, what="the stream's first acknowledgement")
            assert server.process is not None
            server.process.terminate()
            await asyncio.wait_for(sender.reader, 30)
        assert ws.close_code == 1012
        assert sender.acked == len(payload)
    finally:
        server.stop()


@pytest.mark.parametrize("lifespan", ["on", "off"])
async def test_serve_hands_streams_over_to_the_fast_path(
    runtime: Runtime, clock: FixedClock, lifespan: str
) -> None:
    """With ``tapevault serve``'s protocol class an open stream's connection is a
    ``DirectStream``, not uvicorn's ASGI protocol. The class finds the endpoint in the lifespan
    state; without a lifespan it serves the stream through ASGI, just the same."""
    listener = listen()  # bound here, so no other process can take the port first
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            runtime.asgi(),
            ws=runtime.websocket_protocol(),
            ws_per_message_deflate=False,
            lifespan=lifespan,
            log_level="warning",
        )
    )
    serving = asyncio.ensure_future(server.serve(sockets=[listener]))
    try:
        await until(lambda: server.started)
        partner = runtime.vault.tenants.create("clinic", 7 * 86400).tenant
        headers = {"sdp_suki_token": issue_token(partner, now=clock.now(), ttl_seconds=3600)}
        session_id = runtime.vault.sessions.create_session(partner, SessionKind.AMBIENT).session_id
        url = f"ws://127.0.0.1:{port}/api/v1/ambient/session/{session_id}/stream"
        async with connect(url, additional_headers=headers) as ws:
            sender = Sender(ws)
            await ws.send(b"\x00" * 640)
            await until(lambda: sender.acked)
            kinds = {type(c) for c in server.server_state.connections}
            assert (DirectStream in kinds) == (lifespan == "on")
            await sender.finish()
        assert sender.acked == 640
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        listener.close()
