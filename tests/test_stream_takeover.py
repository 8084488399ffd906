"""Two servers on one database: recovery never takes a live stream from a writer that still holds
its lease, whatever the servers' clocks say, and a writer whose stream is taken over stops
acknowledging and says so. Real server processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tapevault.config import Settings
from tapevault.core.access import MemoryAccessLog
from tapevault.core.wav import parse_wav
from tapevault.ingest.recovery import recover_streams
from tapevault.runtime import open_runtime
from tests import support
from tests.server import Server, free_port
from tests.support import wait_for

pytestmark = pytest.mark.server

FRAME = 640  # 20 ms of 16 kHz mono PCM16


class Sender(support.PacedSender):
    """Streams frames to one server and keeps the highest acknowledged byte count (and what
    it sent, to compare)."""

    async def finish(self) -> tuple[int | None, str | None]:
        """Ask the server to end (if it has not closed already); its close code and reason."""
        if not self.reader.done():
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send('{"type":"end"}')
        await asyncio.wait_for(self.reader, 30)
        return self.ws.close_code, self.ws.close_reason


@pytest.fixture
def server_a(tmp_path: Path, database_url: str) -> Iterator[Server]:
    srv = Server(tmp_path / "data", free_port()).start(TAPEVAULT_DATABASE_URL=database_url)
    try:
        yield srv
    finally:
        srv.stop()


def open_session(server: Server) -> tuple[dict[str, str], str]:
    tenant = server.tenant()
    headers = {"sdp_suki_token": server.token(tenant["partner_id"])}
    response = requests.post(
        f"{server.base}/api/v1/ambient/session/create", headers=headers, timeout=10
    )
    return headers, response.json()["ambient_session_id"]


def ws_url(server: Server, session_id: str) -> str:
    return f"ws://127.0.0.1:{server.port}/api/v1/ambient/session/{session_id}/stream"


def finished_recording(
    server: Server, headers: dict[str, str], session_id: str
) -> dict[str, object]:
    """End the session, wait until its one recording is finalized, and return it."""
    requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/end", headers=headers, timeout=10
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = requests.get(
            f"{server.base}/api/v1/ambient/session/{session_id}", headers=headers, timeout=10
        ).json()
        recordings: list[dict[str, object]] = body["recordings"]
        if recordings and all(r["status"] in ("available", "failed") for r in recordings):
            assert len(recordings) == 1
            return recordings[0]
        time.sleep(0.1)
    raise AssertionError(f"the recording of {session_id} was not finalized")


def stored_pcm(server: Server, recording: dict[str, object]) -> bytes:
    path = next((server.data_dir / "audio").rglob(f"{recording['recording_id']}.wav"))
    with path.open("rb") as f:
        info = parse_wav(f, path.stat().st_size)
        f.seek(info.data_offset)
        return f.read(info.data_size)


async def test_a_server_with_its_clock_ahead_does_not_take_a_live_stream(
    server_a: Server, database_url: str
) -> None:
    """Server B, its clock 100 s ahead, starts (and runs recovery) while A writes a stream: the
    stream is not taken from A, which ends it normally, and every byte A acked is stored."""
    headers, session_id = open_session(server_a)
    payload = random.randbytes(FRAME * 200)
    server_b = Server(server_a.data_dir, free_port())
    async with connect(ws_url(server_a, session_id), additional_headers=headers) as ws:
        sender = Sender(ws)
        await sender.send(payload[: FRAME * 100])
        await sender.acked_all()
        try:
            # B's start-up recovery has run by the time it answers /healthz.
            server_b.start(
                TAPEVAULT_DATABASE_URL=database_url, TAPEVAULT_CLOCK_OFFSET_SECONDS="100"
            )
            await sender.send(payload[FRAME * 100 :])
            code, reason = await sender.finish()
            recording = finished_recording(server_b, headers, session_id)
        finally:
            server_b.stop()
    pcm = stored_pcm(server_a, recording)
    assert sender.acked <= len(pcm), f"acked {sender.acked} bytes, stored {len(pcm)}"
    assert pcm == payload[: len(pcm)]
    assert (code, reason) == (1000, "stream complete")
    assert recording["recovered"] is False and pcm == payload


@pytest.mark.parametrize("direct", ["on", "off"])
async def test_a_writer_whose_stream_is_taken_over_stops_acking_and_says_so(
    database_url: str, tmp_path: Path, direct: str
) -> None:
    """Recovery takes A's live stream (as if A's lease had lapsed): A acks nothing more, closes
    4410 with a reason, and every byte it did ack is in the finalized recording. Both paths:
    the direct one and ASGI."""
    server = Server(tmp_path / "data", free_port()).start(
        TAPEVAULT_DATABASE_URL=database_url, TAPEVAULT_DIRECT_STREAMS=direct
    )
    try:
        headers, session_id = open_session(server)
        payload = random.randbytes(FRAME * 300)
        async with connect(ws_url(server, session_id), additional_headers=headers) as ws:
            sender = Sender(ws)
            await sender.send(payload[: FRAME * 100])
            await sender.acked_all()
            assert take_over_everything(server, database_url) == 1
            await sender.send(payload[FRAME * 100 :])
            code, reason = await sender.finish()
        recording = finished_recording(server, headers, session_id)
    finally:
        server.stop()
    pcm = stored_pcm(server, recording)
    assert code == 4410 and reason is not None and "taken over" in reason, (code, reason)
    last = re.search(r"after byte (\d+) ", reason)
    assert last is not None and sender.acked <= int(last[1]) <= len(pcm), reason
    assert recording["recovered"] is True
    assert FRAME * 100 <= sender.acked <= len(pcm), f"acked {sender.acked}, stored {len(pcm)}"
    assert pcm == payload[: len(pcm)]


def take_over_everything(server: Server, database_url: str) -> int:
    """Run recovery from another process's point of view, treating every lease as lapsed."""
    settings = Settings.load(
        {"data_dir": str(server.data_dir), "database_url": database_url}, env={}
    )
    runtime = open_runtime(settings, access_log=MemoryAccessLog(), run_migrations=False)
    try:
        return recover_streams(runtime.vault.ingest, "another-server", stale_seconds=0)
    finally:
        runtime.close()


async def test_a_twilio_call_whose_track_is_taken_over_is_closed_4410(tmp_path: Path) -> None:
    """Twilio reads no acks, but a call whose track recovery took over is closed 4410 with a
    reason instead of writing on into a recording that is no longer its own."""
    server = Server(tmp_path / "data", free_port()).start()
    database_url = f"sqlite:///{server.data_dir / 'tapevault.db'}"
    try:
        token = server.token(server.tenant()["partner_id"])
        url = f"ws://127.0.0.1:{server.port}/twilio/media-stream"
        async with connect(url) as ws:
            await ws.send(twilio_start(token))
            timestamp = 0
            for _ in range(10):
                await ws.send(twilio_media(timestamp))
                timestamp += 20
            await receiving(server)  # the call's track is open
            # Taken over once; asked again while nothing was (say, a lease renewed in the very
            # millisecond asked), with what the database held if it never is.
            wait_for(
                lambda: take_over_everything(server, database_url) == 1 or None,
                10,
                f"recovery to take the call's track over (recordings: {live_rows(server)})",
            )
            deadline = time.monotonic() + 10
            with pytest.raises(ConnectionClosed) as closed:
                while time.monotonic() < deadline:
                    await ws.send(twilio_media(timestamp))
                    timestamp += 20
                    await asyncio.sleep(0.01)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4410
        assert closed.value.rcvd.reason == "stream taken over by recovery"
    finally:
        server.stop()


def twilio_start(token: str) -> str:
    return json.dumps(
        {
            "event": "start",
            "start": {
                "callSid": "CA00000000000000000000000000000001",
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"sdp_suki_token": token},
            },
        }
    )


def twilio_media(timestamp: int) -> str:
    payload = base64.b64encode(bytes(range(160))).decode()
    return json.dumps(
        {
            "event": "media",
            "media": {"track": "inbound", "timestamp": str(timestamp), "payload": payload},
        }
    )


def live_rows(server: Server) -> list[tuple[str, str, str | None, int | None]]:
    """(id, status, writer, lease) of every recording, for a failure message."""
    db = sqlite3.connect(server.data_dir / "tapevault.db")
    try:
        return db.execute(
            "SELECT recording_id, status, writer_id, heartbeat_ms FROM recordings"
        ).fetchall()
    finally:
        db.close()


async def receiving(server: Server) -> None:
    """Wait until the server has opened a live recording."""
    deadline = time.monotonic() + 10
    while True:
        db = sqlite3.connect(server.data_dir / "tapevault.db")
        try:
            found = db.execute("SELECT 1 FROM recordings WHERE status = 'receiving'").fetchone()
        finally:
            db.close()
        if found:
            return
        assert time.monotonic() < deadline, "no live recording was opened"
        await asyncio.sleep(0.02)
