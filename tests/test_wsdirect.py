"""The live-stream fast path's connection logic, on a fake transport and a real group commit:
exact bytes, acks after syncs (held for a client that does not read), the end, every close."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import weakref
from pathlib import Path
from typing import Any, cast

import pytest

from tapevault.errors import AuthError
from tapevault.http.wsdirect import DirectStream
from tapevault.http.wsframe import BINARY, CLOSE, PING, PONG, TEXT, parse_close
from tapevault.ingest import durable
from tapevault.ingest.durable import AckSink, DurableStream, GroupCommitter
from tests.support import client_frame, until

END = client_frame(TEXT, b'{"type":"end"}')


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.reading = True
        self.unread = 0  # what get_write_buffer_size reports: bytes the peer has not read
        self.eof_written = False
        self.protocol: DirectStream | None = None

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> Any:
        return ("192.0.2.7", 50000) if name == "peername" else None

    def get_write_buffer_size(self) -> int:
        return self.unread

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Our side is done; the peer reads the rest and hangs up at once."""
        self.eof_written = True
        self.close()

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            assert self.protocol is not None
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def frames(self) -> list[tuple[int, bytes]]:
        """What the server sent, as (opcode, payload); server frames are never masked."""
        out, pos, frames = bytes(self.out), 0, []
        while pos < len(out):
            n, pos = out[pos + 1], pos + 2
            assert n < 126
            frames.append((out[pos - 2] & 0x0F, out[pos : pos + n]))
            pos += n
        return frames

    def acks(self) -> list[int]:
        return [json.loads(p)["bytes"] for op, p in self.frames() if op == TEXT]

    def close_frame(self) -> tuple[int, str] | None:
        closes = [p for op, p in self.frames() if op == CLOSE]
        return parse_close(closes[0]) if closes else None


class _Recording(str):
    """The fake's recording: its name, and the tenant it belongs to (for the request log)."""

    partner_id = "tenant"


class FakeEndpoint:
    """StreamEndpoint's surface, over a real GroupCommitter in a temporary directory."""

    def __init__(self, tmp_path: Path, frame_bytes: int = 2, refuse: Exception | None = None):
        self.committer = GroupCommitter(tmp_path, interval=0.01)
        self.path = tmp_path / "s.raw"
        self.frame_bytes = frame_bytes
        self.refuse = refuse
        self.closed: list[str] = []

    def client_address(self, peer: str | None, headers: dict[str, str]) -> str | None:
        return peer

    async def open(
        self,
        session_id: str,
        params: dict[str, str],
        headers: dict[str, str],
        client: str | None = None,
        request: str | None = None,
    ):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)  # admission takes a moment; frames may arrive meanwhile
        if self.refuse is not None:
            raise self.refuse
        return _Recording("recording"), self.frame_bytes

    def start(self, recording: str, acks: AckSink) -> DurableStream:
        return self.committer.open(self.path, acks)

    async def end(self, stream: DurableStream, recording: str) -> OSError | None:
        error = None
        try:
            await self.committer.finish(stream)
        except OSError as exc:
            error = exc
        self.closed.append(recording)
        return error


def connect(
    endpoint: FakeEndpoint, **kw: Any
) -> tuple[DirectStream, FakeTransport, list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    direct = DirectStream(
        cast(Any, endpoint),
        "session",
        {},
        {},
        max_size=1 << 20,
        ping_interval=kw.get("ping_interval"),
        ping_timeout=kw.get("ping_timeout"),
        on_task=tasks.append,
        on_lost=lambda _: None,
    )
    transport = FakeTransport()
    transport.protocol = direct
    direct.connection_made(cast(Any, transport))
    return direct, transport, tasks


async def test_bytes_are_stored_exactly_and_acked_after_syncs(tmp_path: Path) -> None:
    """Frames split anyhow across reads are stored in order; acks only grow, each covers
    synced bytes; ``end`` gives the final ack and then close 1000."""
    endpoint = FakeEndpoint(tmp_path)
    direct, transport, tasks = connect(endpoint)
    assert not transport.reading  # nothing is read before the stream is admitted
    payload = random.randbytes(640 * 40)
    wire = b"".join(client_frame(BINARY, payload[i : i + 640]) for i in range(0, len(payload), 640))
    await until(lambda: transport.reading)
    pos = 0
    while pos < len(wire):
        step = random.randint(1, 1500)
        direct.data_received(wire[pos : pos + step])
        pos += step
        await asyncio.sleep(0)
    await until(lambda: transport.acks() and transport.acks()[-1] == len(payload))
    direct.data_received(END)
    await asyncio.gather(*tasks)
    acks = transport.acks()
    assert acks == sorted(acks) and acks[-1] == len(payload)
    assert transport.close_frame() == (1000, "stream complete")
    assert endpoint.path.read_bytes() == payload
    assert endpoint.closed == ["recording"]


async def test_a_partial_frame_closes_4400_after_acking_what_was_stored(tmp_path: Path) -> None:
    endpoint = FakeEndpoint(tmp_path, frame_bytes=4)
    direct, transport, tasks = connect(endpoint)
    await until(lambda: transport.reading)
    direct.data_received(client_frame(BINARY, b"\x01" * 8) + client_frame(BINARY, b"\x02" * 6))
    direct.data_received(client_frame(BINARY, b"\x03" * 8))  # after the bad one: not stored
    await asyncio.gather(*tasks)
    code, reason = transport.close_frame() or (0, "")
    assert code == 4400 and "not a whole number of 4-byte frames" in reason
    assert transport.acks()[-1] == 8
    assert endpoint.path.read_bytes() == b"\x01" * 8


async def test_a_client_that_does_not_read_gets_only_the_latest_ack(tmp_path: Path) -> None:
    """Five frames synced one by one while the client reads nothing: no ack is queued, and
    when it reads again it gets one ack, the latest."""
    endpoint = FakeEndpoint(tmp_path)
    direct, transport, tasks = connect(endpoint)
    await until(lambda: transport.reading)
    direct.pause_writing()

    def synced() -> int:
        return direct.stream.synced if direct.stream is not None else 0

    for i in range(1, 6):  # each frame synced on its own: five acks the client did not take
        direct.data_received(client_frame(BINARY, b"\x00" * 64))
        goal = 64 * i
        await until(lambda: synced() == goal, what=f"frame {i} synced")  # noqa: B023
    assert transport.acks() == []
    assert direct.stream is not None and direct.stream.synced == 320
    direct.resume_writing()
    assert transport.acks() == [320]
    direct.data_received(END)
    await asyncio.gather(*tasks)
    assert transport.acks() == [320] and transport.close_frame() == (1000, "stream complete")


async def test_the_final_ack_goes_out_even_while_writing_is_paused(tmp_path: Path) -> None:
    endpoint = FakeEndpoint(tmp_path)
    direct, transport, tasks = connect(endpoint)
    await until(lambda: transport.reading)
    direct.pause_writing()
    direct.data_received(client_frame(BINARY, b"\x00" * 64) + END)
    await asyncio.gather(*tasks)
    assert transport.acks() == [64] and transport.close_frame() == (1000, "stream complete")


async def test_pings_are_answered_and_a_client_close_is_echoed(tmp_path: Path) -> None:
    endpoint = FakeEndpoint(tmp_path)
    direct, transport, tasks = connect(endpoint)
    await until(lambda: transport.reading)
    direct.data_received(client_frame(PING, b"hello") + client_frame(BINARY, b"\x00" * 64))
    assert (PONG, b"hello") in transport.frames()
    direct.data_received(client_frame(CLOSE, (1001).to_bytes(2, "big") + b"bye"))
    await asyncio.gather(*tasks)
    assert transport.close_frame() == (1001, "")  # the echo
    assert transport.closed and endpoint.closed == ["recording"]
    assert endpoint.path.read_bytes() == b"\x00" * 64  # synced although no ack was awaited


async def test_a_protocol_violation_closes_at_once_and_ends_the_stream(tmp_path: Path) -> None:
    endpoint = FakeEndpoint(tmp_path)
    direct, transport, tasks = connect(endpoint)
    await until(lambda: transport.reading)
    direct.data_received(client_frame(BINARY, b"\x00" * 4, masked=False))
    direct.data_received(client_frame(BINARY, b"\x00" * 4))  # ignored: the peer is broken
    await asyncio.gather(*tasks)
    close = transport.close_frame()
    assert close is not None and close[0] == 1002
    assert transport.closed and endpoint.closed == ["recording"]


async def test_a_client_that_never_answers_pings_is_dropped(tmp_path: Path) -> None:
    endpoint = FakeEndpoint(tmp_path)
    _, transport, tasks = connect(endpoint, ping_interval=0.02, ping_timeout=0.02)
    await asyncio.gather(*tasks)
    assert any(op == PING for op, _ in transport.frames())
    assert transport.close_frame() == (1011, "keepalive ping timeout")
    assert transport.closed and endpoint.closed == ["recording"]


async def test_pongs_keep_a_client_alive(tmp_path: Path) -> None:
    endpoint = FakeEndpoint(tmp_path)
    direct, transport, tasks = connect(endpoint, ping_interval=0.02, ping_timeout=0.05)
    for _ in range(6):
        await until(lambda: direct.pong_due is not None)
        assert direct.pong_due is not None
        direct.data_received(client_frame(PONG, direct.pong_due))
    assert not transport.closed
    direct.data_received(END)
    await asyncio.gather(*tasks)
    assert transport.close_frame() == (1000, "stream complete")


async def test_server_shutdown_acks_everything_then_closes_1012(tmp_path: Path) -> None:
    endpoint = FakeEndpoint(tmp_path)
    direct, transport, tasks = connect(endpoint)
    await until(lambda: transport.reading)
    direct.data_received(client_frame(BINARY, b"\x00" * 640))
    direct.shutdown()
    await asyncio.gather(*tasks)
    assert transport.acks()[-1] == 640
    assert transport.close_frame() == (1012, "server shutting down")


async def test_a_refused_stream_is_closed_with_its_code(tmp_path: Path) -> None:
    endpoint = FakeEndpoint(tmp_path, refuse=AuthError("bad token"))
    _, transport, tasks = connect(endpoint)
    await asyncio.gather(*tasks)
    assert transport.close_frame() == (4401, "bad token")
    assert endpoint.closed == [] and not endpoint.path.exists()


async def test_a_failed_sync_closes_1011_without_acking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int) -> None:
        raise OSError(5, os.strerror(5))

    monkeypatch.setattr(durable, "sync_filesystem", failing)
    endpoint = FakeEndpoint(tmp_path)
    direct, transport, tasks = connect(endpoint)
    await until(lambda: transport.reading)
    direct.data_received(client_frame(BINARY, b"\x00" * 640))
    await asyncio.gather(*tasks)  # the failure ends the stream without waiting for the client
    code, reason = transport.close_frame() or (0, "")
    assert code == 1011 and reason.startswith("storage failure: sync failed")
    assert transport.acks() == []


async def test_a_client_far_ahead_of_real_time_is_held_back_by_tcp(tmp_path: Path) -> None:
    """Past BACKLOG_BYTES unwritten, reading stops until the next batch takes them."""
    endpoint = FakeEndpoint(tmp_path)
    direct, transport, tasks = connect(endpoint)
    await until(lambda: transport.reading)
    direct.data_received(client_frame(BINARY, b"\x00" * durable.BACKLOG_BYTES))
    assert not transport.reading and direct.throttled
    await until(lambda: transport.reading)
    assert direct.stream is not None and direct.stream.backlog == 0
    direct.data_received(END)
    await asyncio.gather(*tasks)
    assert transport.acks()[-1] == durable.BACKLOG_BYTES


async def test_a_ping_flood_is_closed_1008(tmp_path: Path) -> None:
    """Pings far faster than any keepalive are answered up to a burst, then closed with 1008."""
    endpoint = FakeEndpoint(tmp_path)
    direct, transport, tasks = connect(endpoint)
    await until(lambda: transport.reading)
    direct.data_received(client_frame(PING, b"p") * 1000)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    pongs = [op for op, _ in transport.frames() if op == PONG]
    assert 0 < len(pongs) < 100
    assert transport.close_frame() == (1008, "too many pings")
    assert transport.closed and endpoint.closed == ["recording"]


async def test_a_ping_from_a_client_that_does_not_read_gets_no_pong(tmp_path: Path) -> None:
    """With our output piling up unread, a ping is not answered (the pong would pile up too):
    the connection is closed with 1008."""
    endpoint = FakeEndpoint(tmp_path)
    direct, transport, tasks = connect(endpoint)
    await until(lambda: transport.reading)
    transport.unread = 1 << 20
    direct.data_received(client_frame(PING, b"p"))
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert (PONG, b"p") not in transport.frames()
    code, reason = transport.close_frame() or (0, "")
    assert code == 1008 and "does not read" in reason


async def test_a_lost_connection_frees_its_buffers_without_a_garbage_collection(
    tmp_path: Path,
) -> None:
    """A connection lost with an incomplete large frame leaves no reference cycle: with the
    collector off (as after gc.freeze()), the stream and its buffer are freed at once."""
    endpoint = FakeEndpoint(tmp_path)

    async def lost_mid_frame() -> weakref.ref[DirectStream]:
        direct, transport, tasks = connect(endpoint)
        await until(lambda: transport.reading)
        frame = client_frame(BINARY, b"\x00" * 1_000_000)
        direct.data_received(frame[: len(frame) // 2])  # half a frame, buffered
        transport.close()  # the peer vanished
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return weakref.ref(direct)

    gc.collect()
    gc.disable()
    try:
        gone = await lost_mid_frame()
        await asyncio.sleep(0)
        assert gone() is None, [type(r).__name__ for r in gc.get_referrers(gone())]
    finally:
        gc.enable()
