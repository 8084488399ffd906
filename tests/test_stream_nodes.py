"""What a live stream keeps when its node is lost, with real server processes: acks carry the
store-durable count in both transports; a node killed and its disk gone, another node on the
same PostgreSQL database and bucket (moto) finalizes the stream from the store's copy with
exactly the bytes the acks called stored, and the client resumes there on that node; a node
killed and back within the wait finalizes every acknowledged byte from its spool; a copy killed
mid-upload leaves no half object."""

from __future__ import annotations

import asyncio
import io
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from websockets.asyncio.client import connect

from tapevault.config import Settings
from tapevault.core.access import MemoryAccessLog
from tapevault.core.streamparts import part_key, stored_bytes, stored_parts
from tapevault.core.wav import parse_wav
from tapevault.ingest.recovery import recover_streams
from tapevault.runtime import open_runtime
from tapevault.storage import open_store
from tests.objectstores import S3Server
from tests.server import Server
from tests.support import Sender, credentials, new_session, until, wait_available, ws_url

pytestmark = pytest.mark.server

FRAME = 640  # 20 ms of 16 kHz mono PCM16


async def send_frames(sender: Sender, payload: bytes, pace: float = 0.0) -> None:
    for i in range(0, len(payload), FRAME):
        await sender.ws.send(payload[i : i + FRAME])
        await asyncio.sleep(pace)


def recording_pcm(server: Server, headers: dict[str, str], session_id: str) -> list[bytes]:
    """The PCM of each of the session's recordings, downloaded through the server's URLs."""
    urls = requests.get(
        f"{server.base}/api/v1/ambient/session/{session_id}/recording",
        headers=headers,
        timeout=10,
    )
    assert urls.status_code == 200, urls.text
    out = []
    for entry in urls.json()["recordings"]:
        media = requests.get(entry["presigned_url"], timeout=30)
        assert media.status_code == 200
        wav = media.content
        info = parse_wav(io.BytesIO(wav), len(wav))
        out.append(wav[info.data_offset : info.data_offset + info.data_size])
    return out


@pytest.mark.parametrize("direct", ["on", "off"])
async def test_acks_carry_both_counts_in_either_transport(
    tmp_path: Path, direct: str, s3_server: S3Server
) -> None:
    """Copies every second to a bucket: acks report ``stored`` growing behind ``bytes`` while
    the stream is live (through the direct path and through ASGI alike), never ahead of it,
    and the last ack before 1000 reports everything stored."""
    server = Server(tmp_path / "data").start(
        TAPEVAULT_STREAM_UPLOAD_INTERVAL="1",
        TAPEVAULT_DIRECT_STREAMS=direct,
        TAPEVAULT_STORAGE_URL=s3_server.new_store_url(),
        **s3_server.env,
    )
    try:
        headers = credentials(server)
        session_id = new_session(server, headers)
        payload = random.randbytes(FRAME * 150)  # 3 s, sent in real time
        seen: list[tuple[int, int]] = []
        async with connect(ws_url(server, session_id), additional_headers=headers) as ws:
            sender = Sender(ws)
            for i in range(0, len(payload), FRAME):
                await ws.send(payload[i : i + FRAME])
                await asyncio.sleep(0.02)
                seen.append((sender.acked, sender.stored))
            await sender.finish()  # Sender checks stored <= bytes and neither goes back
        assert sender.acked == sender.stored == len(payload)
        assert any(0 < stored < acked for acked, stored in seen), "a copy while live"
    finally:
        server.stop()


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    return s3_server.new_store_url()


def take_over_now(
    server: Server,
    database_url: str,
    s3: S3Server,
    s3_url: str,
    mp: pytest.MonkeyPatch,
    spool_wait_seconds: int = 0,
) -> int:
    """Recovery as ``server``'s node runs it, without waiting the minute after which a stream
    of another node (whose pid it cannot check) is judged abandoned."""
    for name, value in s3.env.items():
        mp.setenv(name, value)
    settings = Settings.load(
        {"data_dir": str(server.data_dir), "database_url": database_url, "storage_url": s3_url},
        env={},
    )
    runtime = open_runtime(settings, access_log=MemoryAccessLog(), run_migrations=False)
    try:
        return recover_streams(
            runtime.vault.ingest,
            runtime.context.process_id,
            stale_seconds=0,
            spool_wait_seconds=spool_wait_seconds,
        )
    finally:
        runtime.close()


def node(
    tmp_path: Path, name: str, database_url: str, s3: S3Server, s3_url: str, **env: str
) -> Server:
    return Server(tmp_path / name).start(
        TAPEVAULT_DATABASE_URL=database_url, TAPEVAULT_STORAGE_URL=s3_url, **s3.env, **env
    )


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            server.kill()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_lost_node_loses_only_what_was_not_stored(
    tmp_path: Path,
    database_url: str,
    s3_server: S3Server,
    s3_url: str,
    servers: list[Server],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Node A acks X+Y bytes of which X are stored, and dies with its disk. Node B (same
    database, same bucket) takes the stream over and finalizes exactly X bytes from the store's
    copy; the client, resuming at X in a new stream on B, loses nothing it was told stored."""
    a = node(tmp_path, "a", database_url, s3_server, s3_url, TAPEVAULT_STREAM_UPLOAD_INTERVAL="3")
    servers.append(a)
    headers = credentials(a)
    session_id = new_session(a, headers)
    payload = random.randbytes(FRAME * 200)
    x, y = FRAME * 60, FRAME * 40
    ws = await connect(ws_url(a, session_id), additional_headers=headers)
    sender = Sender(ws)
    await send_frames(sender, payload[:x])
    await until(lambda: sender.stored == x, what="the first part stored", within=20)
    await send_frames(sender, payload[x : x + y])
    await until(lambda: sender.acked == x + y, what="every byte acked on A")
    assert sender.stored == x, "the next copy is not due yet"
    a.kill()
    await sender.reader
    shutil.rmtree(a.data_dir)  # the node's disk is gone with it

    b = node(tmp_path, "b", database_url, s3_server, s3_url, TAPEVAULT_STREAM_NODE_WAIT="0")
    servers.append(b)
    assert take_over_now(b, database_url, s3_server, s3_url, monkeypatch) == 1
    # The client resumes on B at the last stored count, in the session's next recording.
    async with connect(ws_url(b, session_id), additional_headers=headers) as ws2:
        resumed = Sender(ws2)
        await send_frames(resumed, payload[sender.stored :])
        await resumed.finish()
    requests.post(f"{b.base}/api/v1/ambient/session/{session_id}/end", headers=headers, timeout=10)
    first, second = wait_available(b, headers, session_id)
    assert first["status"] == second["status"] == "available", (first, second)
    assert first["recovered"] is True
    pcm = recording_pcm(b, headers, session_id)
    assert pcm[0] == payload[:x]  # exactly the store-durable bytes
    assert b"".join(pcm) == payload  # nothing lost, nothing twice
    for name, value in s3_server.env.items():  # this process reads the bucket too
        monkeypatch.setenv(name, value)
    store = open_store(s3_url, scratch=tmp_path / "scratch")
    assert stored_parts(store, str(first["recording_id"])) == []  # the copy cleaned up


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_node_back_within_the_wait_keeps_every_acknowledged_byte(
    tmp_path: Path,
    database_url: str,
    s3_server: S3Server,
    s3_url: str,
    servers: list[Server],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Node A dies with streams whose acks are ahead of the store's copy; node B takes them
    over but leaves their finalization to A (only A has the spool) while A may come back; A
    restarted finalizes every acknowledged byte."""
    a = node(tmp_path, "a", database_url, s3_server, s3_url, TAPEVAULT_STREAM_UPLOAD_INTERVAL="0")
    servers.append(a)
    headers = credentials(a)
    session_id = new_session(a, headers)
    payload = random.randbytes(FRAME * 80)
    ws = await connect(ws_url(a, session_id), additional_headers=headers)
    sender = Sender(ws)
    await send_frames(sender, payload)
    await until(lambda: sender.acked == len(payload), what="every byte acked on A")
    assert sender.stored == 0  # no copy while live (interval 0)
    a.kill()
    await sender.reader

    b = node(tmp_path, "b", database_url, s3_server, s3_url, TAPEVAULT_STREAM_NODE_WAIT="10m")
    servers.append(b)
    # B takes the stream over as its recovery does once A's lease is a minute old (only A's own
    # node could tell A dead by its pid), and the job waits for A's node, as B's would.
    assert take_over_now(b, database_url, s3_server, s3_url, monkeypatch, 600) == 1
    requests.post(f"{b.base}/api/v1/ambient/session/{session_id}/end", headers=headers, timeout=10)

    def recording() -> dict[str, object]:
        body = requests.get(
            f"{b.base}/api/v1/ambient/session/{session_id}", headers=headers, timeout=10
        ).json()
        found: dict[str, object] = body["recordings"][0]
        return found

    await until(lambda: recording()["status"] == "processing", what="B took the stream over")
    await asyncio.sleep(2)  # B's worker polls every second: it left the job alone
    assert recording()["status"] == "processing"
    a.start(TAPEVAULT_DATABASE_URL=database_url, TAPEVAULT_STORAGE_URL=s3_url, **s3_server.env)
    (done,) = wait_available(b, headers, session_id)
    assert done["status"] == "available" and done["recovered"] is True
    assert recording_pcm(b, headers, session_id) == [payload]


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tapevault.storage import node_local, open_store

    url, data, spool, key, stall = sys.argv[1:6]
    real = node_local._range_chunks

    def stalling(fd, offset, length, size=node_local.CHUNK):
        for index, chunk in enumerate(real(fd, offset, length, size)):
            yield chunk
            if index == int(stall):  # this much is on its way to the store
                print("mid-copy", flush=True)
                time.sleep(3600)

    node_local._range_chunks = stalling
    local = node_local.NodeLocalDisk(Path(data), open_store(url, scratch=Path(data) / "s"), "kid")
    local.promote_range(Path(spool), key, 0, Path(spool).stat().st_size)
    """
)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_copy_killed_mid_upload_leaves_no_half_part(
    tmp_path: Path, request: pytest.FixtureRequest, where: str
) -> None:
    """A process SIGKILLed while it puts a stream's part (20 MiB: a multipart upload on S3,
    two parts of it sent) leaves no object at that key: the chain, and so ``stored``, is what
    it was."""
    if where == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        request.getfixturevalue("s3_store_env")
        url = s3.new_store_url()
    else:
        url = (tmp_path / "audio").as_uri()
    store = open_store(url, scratch=tmp_path / "scratch")
    store.put(part_key("rec", 0), [b"\x01" * FRAME])
    spool = tmp_path / "spool.raw"
    spool.write_bytes(random.randbytes(20 * 1024 * 1024))
    key = part_key("rec", FRAME)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, str(tmp_path / "kid"), str(spool), key, "17"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "mid-copy"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
    assert store.stat(key) is None
    assert stored_bytes(stored_parts(store, "rec")) == FRAME
