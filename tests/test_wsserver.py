"""uvicorn's WebSocket protocol as ``tapevault serve`` runs it with TAPEVAULT_DIRECT_STREAMS=off
(``GuardedWebSocketsProtocol``), on a fake transport: closed connections free their buffers."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.server import ServerState

from tapevault.http.wsserver import GuardedWebSocketsProtocol

HANDSHAKE = (
    b"GET /stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.out += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def echo_until_disconnect(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def test_a_lost_connection_frees_a_partial_frame_without_a_garbage_collection() -> None:
    """With the collector off (as after gc.freeze()), a connection lost in the middle of a
    large frame lets go of websockets' parser, and the frame it buffered, at once."""
    config = Config(app=echo_until_disconnect, lifespan="off", ws_max_size=16 << 20)
    config.load()
    state = ServerState()

    async def lost_mid_frame() -> weakref.ref[Any]:
        protocol = GuardedWebSocketsProtocol(config, state, {})
        transport = FakeTransport()
        protocol.connection_made(cast(Any, transport))
        protocol.data_received(HANDSHAKE)
        deadline = asyncio.get_running_loop().time() + 5
        while not protocol.handshake_complete:
            assert asyncio.get_running_loop().time() < deadline, "no handshake"
            await asyncio.sleep(0.001)
        header = bytes((0x82, 0x80 | 127)) + (8 << 20).to_bytes(8, "big") + b"\0\0\0\0"
        protocol.data_received(header + b"\0" * (4 << 20))  # half of an 8 MiB frame
        parser = weakref.ref(protocol.conn)
        protocol.connection_lost(None)
        await asyncio.gather(*state.tasks)
        return parser

    gc.collect()
    gc.disable()
    try:
        parser = await lost_mid_frame()
        await asyncio.sleep(0)
        assert parser() is None, [type(r).__name__ for r in gc.get_referrers(parser())]
    finally:
        gc.enable()
