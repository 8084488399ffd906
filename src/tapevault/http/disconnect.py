"""Noticing a client that went away while a long body streams to it.

ASGI servers drop writes to a closed connection silently, so a handler only learns of a
disconnect by receiving ``http.disconnect``. ``Disconnect`` waits for it in a task of its own,
started the first time it is asked (i.e. only for a body of more than one chunk: a 64 KiB seek
never pays for it), and answers from then on whether the client is gone.
"""

from __future__ import annotations

import asyncio

from tapevault.http.asgi import Receive


class Disconnect:
    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> bool:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._wait())
            return False
        return self._task.done()

    async def _wait(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
