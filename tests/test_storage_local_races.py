"""Outsider probes: kept descriptors of the local store never serve a replaced or deleted
file's bytes to a later read, from threads racing one another, and never leak."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from tapevault.errors import StorageError
from tapevault.storage.local import LocalStore


async def read_all(store: LocalStore, key: str, length: int) -> bytes:
    return b"".join([c async for c in store.read_range(key, 0, length)])


def test_reads_racing_replace_and_delete_see_a_whole_version_or_a_miss(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    versions = [bytes([v]) * 4096 for v in range(1, 5)]
    store.put("a/b", [versions[0]])
    stop = threading.Event()
    seen: set[bytes] = set()
    bad: list[object] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                data = asyncio.run(read_all(store, "a/b", 4096))
            except StorageError:
                continue
            except Exception as exc:  # a probe: any other failure is the finding
                bad.append(exc)
                return
            if data and data not in versions:
                bad.append(data[:8])
            seen.add(data[:1])

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(200):
        if i % 7 == 0:
            store.delete("a/b")
        store.put("a/b", [versions[i % 4]])
    stop.set()
    for t in threads:
        t.join()
    assert not bad
    # the last version written is what a read now sees, through a kept descriptor or not
    assert asyncio.run(read_all(store, "a/b", 4096)) == versions[199 % 4]
    store.delete("a/b")
    with pytest.raises(StorageError):
        asyncio.run(read_all(store, "a/b", 4096))
    store.open_files.close()
    fds = len(os.listdir("/proc/self/fd"))
    for n in range(100):
        store.put(f"k/{n}", [b"x"])
        asyncio.run(read_all(store, f"k/{n}", 1))
    store.open_files.close()
    assert len(os.listdir("/proc/self/fd")) <= fds + 2
