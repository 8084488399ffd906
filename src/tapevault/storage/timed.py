"""An ``ObjectStore`` that times every operation of the store it wraps (metrics).

A wrapper rather than code in each adapter: every store (local, and those to come) is timed the
same way, and an adapter stays about its backend. ``read_range`` is timed until its first chunk,
the store's latency; the rest of a range goes at the client's pace and says nothing about it.
``local_copy`` is timed until the path is ready.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path

from tapevault.core.ports import ObjectInfo, ObjectStore

Observe = Callable[[str, float], None]  # (operation, seconds)


class TimedStore:
    def __init__(self, inner: ObjectStore, observe: Observe) -> None:
        self.inner = inner
        self.observe = observe

    def __getattr__(self, name: str) -> object:
        """The wrapped store's optional capabilities (``Adopt``, ``ListKeys``, ``PutMedia``,
        ``Presign``...), untimed: a runtime-checkable protocol sees them exactly when the
        store has them (a missing one raises AttributeError here as there)."""
        if name.startswith("__") or name in ("inner", "observe"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        start = time.perf_counter()
        try:
            return self.inner.put(key, chunks)
        finally:
            self.observe("put", time.perf_counter() - start)

    def read_range(
        self, key: str, offset: int, length: int, chunk_size: int | None = None
    ) -> AsyncIterator[bytes]:
        start = time.perf_counter()
        chunks = (
            self.inner.read_range(key, offset, length)
            if chunk_size is None  # the store's own default
            else self.inner.read_range(key, offset, length, chunk_size)
        )
        return _FirstChunkTimed(chunks, start, self.observe)

    def stat(self, key: str) -> ObjectInfo | None:
        start = time.perf_counter()
        try:
            return self.inner.stat(key)
        finally:
            self.observe("stat", time.perf_counter() - start)

    def delete(self, key: str) -> bool:
        start = time.perf_counter()
        try:
            return self.inner.delete(key)
        finally:
            self.observe("delete", time.perf_counter() - start)

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        start = time.perf_counter()
        with self.inner.local_copy(key) as path:
            self.observe("local_copy", time.perf_counter() - start)
            yield path


class _FirstChunkTimed:
    """The chunks of a ``read_range``, the wait for the first one timed. Not an async
    generator: after the first chunk ``__anext__`` hands out the store's own awaitable, so a
    long read pays nothing per chunk (a generator layer cost ~5 µs per 64 KiB seek)."""

    __slots__ = ("_chunks", "_observe", "_start", "_timed")

    def __init__(self, chunks: AsyncIterator[bytes], start: float, observe: Observe) -> None:
        self._chunks = chunks
        self._start = start
        self._observe = observe
        self._timed = False

    def __aiter__(self) -> _FirstChunkTimed:
        return self

    def __anext__(self) -> Awaitable[bytes]:
        if self._timed:
            return self._chunks.__anext__()
        self._timed = True
        return self._first()

    async def _first(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        finally:  # a chunk, the end, or a failure: the store answered
            self._observe("read_range", time.perf_counter() - self._start)

    async def aclose(self) -> None:
        """Close the store's reader (it may hold a file), as ``ranged`` does when done."""
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def unwrapped(store: object) -> object:
    """The store a ``TimedStore`` wraps (for code that asks which backend it is)."""
    return store.inner if isinstance(store, TimedStore) else store
