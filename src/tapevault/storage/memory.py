"""An ``ObjectStore`` in a dict, for unit tests and the contract suite.

Each object is one immutable ``bytes`` value swapped in under a lock once it is complete, so a
reader holds either the whole old object or the whole new one, never a mix: the same promise the
real stores keep with rename (local) and single-PUT/multipart completion (S3, Azure).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

from tapevault.core.ports import MediaAttributes, ObjectInfo
from tapevault.errors import StorageError
from tapevault.storage.keys import check_key

DEFAULT_CHUNK = 1024 * 1024


class MemoryStore:
    """Objects held in this process's memory; nothing survives it."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._media: dict[str, MediaAttributes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        check_key(key)
        data = b"".join(chunks)  # complete before it becomes visible
        mtime = time.time()
        with self._lock:
            self._objects[key] = (data, mtime)
            self._media.pop(key, None)
        return ObjectInfo(size=len(data), mtime=mtime)

    def put_media(self, key: str, chunks: Iterable[bytes], media: MediaAttributes) -> ObjectInfo:
        info = self.put(key, chunks)
        with self._lock:
            self._media[key] = media
        return info

    def media(self, key: str) -> MediaAttributes | None:
        """What ``put_media`` recorded for ``key`` (for tests)."""
        return self._media.get(check_key(key))

    def stat(self, key: str) -> ObjectInfo | None:
        found = self._objects.get(check_key(key))
        return None if found is None else ObjectInfo(size=len(found[0]), mtime=found[1])

    def delete(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            self._media.pop(key, None)
            return self._objects.pop(key, None) is not None

    async def read_range(
        self, key: str, offset: int, length: int, chunk_size: int = DEFAULT_CHUNK
    ) -> AsyncIterator[bytes]:
        found = self._objects.get(check_key(key))
        if found is None:
            raise StorageError(f"object {key!r} is missing from storage")
        data = found[0]  # this version, whatever is put or deleted meanwhile
        if offset < 0 or length < 0 or offset + length > len(data):
            raise StorageError(f"range {offset}+{length} is outside object {key!r}")
        view = memoryview(data)
        for start in range(offset, offset + length, chunk_size):
            yield bytes(view[start : min(start + chunk_size, offset + length)])

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        found = self._objects.get(check_key(key))
        if found is None:
            raise StorageError(f"object {key!r} is missing from storage")
        with tempfile.TemporaryDirectory(prefix="tapevault-memory-") as tmp:
            path = Path(tmp) / "object"
            path.write_bytes(found[0])
            yield path
