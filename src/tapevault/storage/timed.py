"""An ``ObjectStore`` that times every operation of the store it wraps (metrics).

A wrapper rather than code in each adapter: every store (local, and those to come) is timed the
same way, and an adapter stays about its backend. ``read_range`` is timed until its first chunk,
the store's latency; the rest of a range goes at the client's pace and says nothing about it.
``local_copy`` is timed until the path is ready.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

from tapevault.core.ports import ObjectInfo, ObjectStore

Observe = Callable[[str, float], None]  # (operation, seconds)


class TimedStore:
    def __init__(self, inner: ObjectStore, observe: Observe) -> None:
        self.inner = inner
        self.observe = observe

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        start = time.perf_counter()
        try:
            return self.inner.put(key, chunks)
        finally:
            self.observe("put", time.perf_counter() - start)

    async def read_range(
        self, key: str, offset: int, length: int, chunk_size: int | None = None
    ) -> AsyncIterator[bytes]:
        start = time.perf_counter()
        chunks = (
            self.inner.read_range(key, offset, length)
            if chunk_size is None  # the store's own default
            else self.inner.read_range(key, offset, length, chunk_size)
        )
        timed = False
        try:
            async for chunk in chunks:
                if not timed:
                    timed = True
                    self.observe("read_range", time.perf_counter() - start)
                yield chunk
        finally:
            if not timed:  # an empty range, or a read that failed before its first chunk
                self.observe("read_range", time.perf_counter() - start)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

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


def unwrapped(store: object) -> object:
    """The store a ``TimedStore`` wraps (for code that asks which backend it is)."""
    return store.inner if isinstance(store, TimedStore) else store
