"""200 concurrent real-time streams for 30 s against a real server process: nothing lost."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest
import requests
from websockets.asyncio.client import connect

from tests.server import Server
from tests.support import Sender, stored_pcm, wait_available, ws_url

pytestmark = pytest.mark.server
STREAMS = int(os.environ.get("TAPEVAULT_LOAD_STREAMS", "200"))
SECONDS = float(os.environ.get("TAPEVAULT_LOAD_SECONDS", "30"))
FRAME = 640  # 20 ms of 16 kHz 16-bit mono
TICK = 0.020


def frame(stream: int, index: int) -> bytes:
    """Deterministic, distinct content per stream and frame, so any mix-up shows."""
    seed = hashlib.sha256(f"{stream}:{index}".encode()).digest()
    return (seed * (FRAME // len(seed) + 1))[:FRAME]


async def test_200_streams_for_30_seconds_lose_nothing(tmp_path: Path) -> None:
    """Every recording's PCM equals what was sent, byte for byte, and every byte was acked."""
    server = Server(tmp_path / "data").start()
    try:
        tenant = server.tenant()
        headers = {"sdp_suki_token": server.token(tenant["partner_id"])}
        sessions = [
            requests.post(
                f"{server.base}/api/v1/ambient/session/create", headers=headers, timeout=10
            ).json()["ambient_session_id"]
            for _ in range(STREAMS)
        ]
        senders = [
            Sender(await connect(ws_url(server, s), additional_headers=headers, max_queue=None))
            for s in sessions
        ]
        frames = int(SECONDS / TICK)
        start = time.monotonic()
        late = 0
        for index in range(frames):
            for number, sender in enumerate(senders):
                await sender.ws.send(frame(number, index))
            target = start + (index + 1) * TICK
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late += 1
        await asyncio.gather(*(sender.finish() for sender in senders))
        total = frames * FRAME
        assert [s.acked for s in senders] == [total] * STREAMS
        for session_id in sessions:
            requests.post(
                f"{server.base}/api/v1/ambient/session/{session_id}/end",
                headers=headers,
                timeout=10,
            )
        for number, session_id in enumerate(sessions):
            recording = wait_available(server, headers, session_id, timeout=120)[0]
            expected = b"".join(frame(number, i) for i in range(frames))
            assert stored_pcm(server, recording, session_id) == expected
        # How often the client itself fell behind real time (shown with -rP; never asserted:
        # timings are for BENCHMARKS.md, not tests).
        print(f"{STREAMS} streams x {frames} frames; client ticks late: {late}")
    finally:
        server.stop()
