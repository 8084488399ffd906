"""The framework floor: a hello-world raw ASGI app under ``tapevault serve``'s uvicorn settings.

Run by the harness as ``python bench/floor.py PORT``; whatever tapevault answers at, it cannot
beat this server on this machine, so it is the reference for the JSON endpoints.

For WebSockets (the ingest reference) it accepts any path, counts the bytes of every binary
message, and every 0.1 s sends each stream with new bytes ``{"type":"ack","bytes":N}``, as
tapevault's group commit does, but without writing or syncing anything; on ``{"type":"end"}``
it sends the final ack and closes with 1000.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

Message = MutableMapping[str, Any]
_BODY = b'{"hello":"world"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_BODY))]
ACK_INTERVAL = 0.1
Send = Callable[[Message], Awaitable[None]]


class _Acker:
    """One task for every open stream: acks what each received, every ``ACK_INTERVAL``."""

    def __init__(self) -> None:
        self.streams: dict[Send, list[int]] = {}  # send -> [received, acked]
        self.task: asyncio.Task[None] | None = None

    def open(self, send: Send) -> list[int]:
        counts = self.streams[send] = [0, 0]
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return counts

    async def _run(self) -> None:
        while self.streams:
            await asyncio.sleep(ACK_INTERVAL)
            for send, counts in list(self.streams.items()):
                if counts[0] > counts[1]:
                    counts[1] = counts[0]
                    with contextlib.suppress(Exception):  # the peer may be gone
                        await _ack(send, counts[0])


_ACKER = _Acker()


async def _ack(send: Send, upto: int) -> None:
    await send({"type": "websocket.send", "text": f'{{"type":"ack","bytes":{upto}}}'})


async def websocket(receive: Callable[[], Awaitable[Message]], send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    counts = _ACKER.open(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is not None:
                counts[0] += len(data)
            elif message.get("text") == '{"type":"end"}':
                break
    finally:
        _ACKER.streams.pop(send, None)
    await _ack(send, counts[0])
    await send({"type": "websocket.close", "code": 1000, "reason": "stream complete"})


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await websocket(receive, send)
        return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


def main() -> None:
    # Keep in step with tapevault.cli.cmd_serve; an optional second argument is the number of
    # processes, as TAPEVAULT_PROCESSES gives tapevault (compare like with like).
    processes = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    uvicorn.run(
        "bench.floor:app" if processes > 1 else app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        http="httptools",
        loop="uvloop",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="on",
        access_log=False,
        server_header=False,
        log_level="warning",
        workers=processes if processes > 1 else None,
    )


if __name__ == "__main__":
    main()
