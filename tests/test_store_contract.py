"""The store contract: every ``ObjectStore`` implementation passes the same cases.

Parametrized over the in-memory store, the local directory, S3 (moto's server) and Azure Blob
(Azurite), like the SQLite/PostgreSQL suites: atomic puts, ranged reads at every boundary, suffix
and open ranges, stat, idempotent delete, confined keys, concurrent puts to one key, a read of an
object deleted or replaced mid-read, and 2 GiB streamed in and out with memory flat.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tapevault.core.ports import MediaAttributes, ObjectStore, Presign, PutMedia
from tapevault.core.ranges import Satisfiable, parse_range
from tapevault.errors import StorageError
from tapevault.storage import open_store
from tapevault.storage.local import LocalStore
from tapevault.storage.memory import MemoryStore
from tests.objectstores import AzuriteServer, S3Server

STORES = ["memory", "local", "s3", "azure"]
GIB = 1024**3
# Peak RSS growth allowed while 2 GiB go through a store: bounded buffers (parts in flight,
# chunks), not the object.
FLAT_KIB = 64 * 1024


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str | None]:
    """(storage URL, endpoint) of a fresh, empty store of the kind under test."""
    if store_kind == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)
        return s3.new_store_url(), None
    if store_kind == "azure":
        azure: AzuriteServer = request.getfixturevalue("azurite_server")
        for name, value in azure.env.items():
            monkeypatch.setenv(name, value)
        return azure.new_store_url(), azure.endpoint
    return (tmp_path / "store").as_uri(), None


@pytest.fixture
def store(store_kind: str, store_url: tuple[str, str | None], tmp_path: Path) -> ObjectStore:
    if store_kind == "memory":
        return MemoryStore()
    url, endpoint = store_url
    return open_store(url, endpoint=endpoint, scratch=tmp_path / "scratch")


def read(store: ObjectStore, key: str, offset: int, length: int, chunk: int = 1024) -> bytes:
    async def collect() -> bytes:
        parts = []
        async for part in store.read_range(key, offset, length, chunk):
            assert 0 < len(part) <= chunk
            parts.append(part)
        return b"".join(parts)

    return asyncio.run(collect())


def pattern(size: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(size))


def test_put_then_stat_and_read_the_whole_object(store: ObjectStore) -> None:
    """A put object reads back byte for byte, and stat knows its size."""
    data = pattern(5000)
    info = store.put("a/b/rec.wav", [data[:1000], data[1000:]])
    assert info.size == 5000
    found = store.stat("a/b/rec.wav")
    assert found is not None and found.size == 5000 and found.mtime > 0
    assert read(store, "a/b/rec.wav", 0, 5000) == data
    assert store.stat("a/b/other.wav") is None


def test_an_empty_object(store: ObjectStore) -> None:
    """Zero bytes are an object too (stat 0, an empty read)."""
    assert store.put("empty.wav", []).size == 0
    found = store.stat("empty.wav")
    assert found is not None and found.size == 0
    assert read(store, "empty.wav", 0, 0) == b""


def test_ranged_reads_at_every_boundary(store: ObjectStore) -> None:
    """First, last, one-byte and chunk-straddling ranges are exact, in bounded chunks."""
    size, chunk = 4096 + 17, 1024
    data = pattern(size, 3)
    store.put("r.wav", [data])
    edges = [0, 1, chunk - 1, chunk, chunk + 1, size - chunk - 1, size - 2, size - 1]
    for offset in edges:
        for length in {1, chunk - 1, chunk, chunk + 1, size - offset}:
            if 0 < length <= size - offset:
                assert read(store, "r.wav", offset, length, chunk) == data[offset : offset + length]


def test_suffix_and_open_ranges(store: ObjectStore) -> None:
    """``bytes=-N`` and ``bytes=N-`` resolved against the size read the right bytes."""
    data = pattern(3000, 5)
    store.put("s.wav", [data])
    for header, expected in [
        ("bytes=-500", data[-500:]),
        ("bytes=-9999", data),
        ("bytes=2500-", data[2500:]),
        ("bytes=0-", data),
        ("bytes=2999-", data[-1:]),
    ]:
        decision = parse_range(header, len(data))
        assert isinstance(decision, Satisfiable), header
        (r,) = decision.ranges
        assert read(store, "s.wav", r.start, r.length) == expected, header


def test_delete_is_idempotent(store: ObjectStore) -> None:
    """Delete removes once (True), then there is nothing (False), and reads fail cleanly."""
    store.put("d.wav", [b"x" * 10])
    assert store.delete("d.wav") is True
    assert store.delete("d.wav") is False
    assert store.delete("never/was.wav") is False
    assert store.stat("d.wav") is None
    with pytest.raises(StorageError):
        read(store, "d.wav", 0, 10)


BAD_KEYS = [
    "",
    "/etc/passwd",
    "../escape.wav",
    "a/../../b.wav",
    "a/./b.wav",
    "a//b.wav",
    "a/b/",
    ".hidden",
    "a\\b.wav",
    "a\x00b.wav",
    "a\nb.wav",
    "é.wav",
    "a/" + "x" * 200,
    "/".join(["s"] * 9),
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=range(len(BAD_KEYS)))
def test_keys_are_confined(store: ObjectStore, key: str) -> None:
    """No key can climb out of the store's root or prefix: each operation refuses it."""
    with pytest.raises(StorageError):
        store.put(key, [b"x"])
    with pytest.raises(StorageError):
        store.stat(key)
    with pytest.raises(StorageError):
        store.delete(key)
    with pytest.raises(StorageError):
        read(store, key, 0, 1)
    with pytest.raises(StorageError), store.local_copy(key):
        pass


def test_a_reader_never_sees_part_of_a_put(store: ObjectStore) -> None:
    """While a put streams, readers get the old object whole; a put that fails leaves it."""
    old = pattern(2000, 1)
    store.put("atomic.wav", [old])
    new = pattern(9000, 2)
    half_sent, go_on = threading.Event(), threading.Event()

    def slow() -> Iterator[bytes]:
        yield new[:4500]
        half_sent.set()
        assert go_on.wait(30)
        yield new[4500:]

    writer = threading.Thread(target=store.put, args=("atomic.wav", slow()))
    writer.start()
    try:
        assert half_sent.wait(30)
        found = store.stat("atomic.wav")
        assert found is not None and found.size == 2000
        assert read(store, "atomic.wav", 0, 2000) == old
    finally:
        go_on.set()
        writer.join(60)
    assert read(store, "atomic.wav", 0, 9000) == new

    class ClientGone(Exception):
        pass

    def broken() -> Iterator[bytes]:
        yield b"partial" * 100
        raise ClientGone

    with pytest.raises(ClientGone):
        store.put("atomic.wav", broken())
    with pytest.raises(ClientGone):
        store.put("fresh.wav", broken())
    assert read(store, "atomic.wav", 0, 9000) == new
    assert store.stat("fresh.wav") is None


def test_concurrent_puts_to_one_key_leave_one_whole_version(store: ObjectStore) -> None:
    """Racing writers: the object afterwards is exactly one of theirs, never a blend."""
    versions = [pattern(1000 + 700 * i, i) for i in range(4)]
    start = threading.Barrier(len(versions))

    def put(data: bytes) -> None:
        start.wait()
        store.put("race.wav", [data[: len(data) // 2], data[len(data) // 2 :]])

    threads = [threading.Thread(target=put, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    found = store.stat("race.wav")
    assert found is not None
    assert read(store, "race.wav", 0, found.size) in versions


@pytest.mark.parametrize("change", ["delete", "replace"])
def test_an_object_deleted_or_replaced_mid_read(store: ObjectStore, change: str) -> None:
    """A read in flight when its object goes away ends with the old bytes or a clean
    ``StorageError``: never a mix of two versions, never a hang."""
    size, chunk = 3 * 1024 * 1024, 64 * 1024
    old = pattern(size, 9)
    store.put("m.wav", [old])

    async def collect() -> bytes:
        parts = []
        chunks = store.read_range("m.wav", 0, size, chunk)
        async for part in chunks:
            parts.append(part)
            if len(parts) == 1:
                if change == "delete":
                    await asyncio.to_thread(store.delete, "m.wav")
                else:
                    await asyncio.to_thread(store.put, "m.wav", [pattern(size, 10)])
        return b"".join(parts)

    try:
        got = asyncio.run(asyncio.wait_for(collect(), 60))
    except StorageError:
        return
    assert got == old


def test_local_copy_is_a_file_with_the_object(store: ObjectStore) -> None:
    """Work that needs a path gets one with the bytes; a missing object is a StorageError."""
    data = pattern(70_000, 4)
    store.put("c/copy.wav", [data])
    with store.local_copy("c/copy.wav") as path:
        assert path.read_bytes() == data
    with pytest.raises(StorageError), store.local_copy("c/none.wav"):
        pass


def test_capabilities(store_kind: str, store: ObjectStore) -> None:
    """Every store takes media attributes; only object stores presign their own URLs."""
    assert isinstance(store, PutMedia)
    info = store.put_media("p.wav", [b"RIFF"], MediaAttributes("audio/wav", 'x"y\r\n.wav'))
    assert info.size == 4
    assert isinstance(store, Presign) == (store_kind in ("s3", "azure"))
    if isinstance(store, LocalStore):
        assert (store.root / "p.wav").read_bytes() == b"RIFF"
    if isinstance(store, Presign):
        # What the store answers its own URL with: the type, and a filename nothing in it
        # could break out of (quotes, CR/LF become "_").
        answer = httpx.get(store.presign("p.wav", 60), timeout=30)
        assert answer.status_code == 200 and answer.content == b"RIFF"
        assert answer.headers["content-type"] == "audio/wav"
        assert answer.headers["content-disposition"] == 'inline; filename="x_y__.wav"'


@pytest.mark.parametrize("kind", ["local", "s3", "azure"])
def test_two_gib_stream_in_and_out_with_memory_flat(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """2 GiB put from a generated stream and read back whole, in a child process whose peak
    RSS grows by less than 64 MiB (the memory store holds objects in memory: not here)."""
    env = dict(os.environ)
    endpoint = ""
    if kind == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        env.update(s3.env)
        url = s3.new_store_url()
    elif kind == "azure":
        azure: AzuriteServer = request.getfixturevalue("azurite_server")
        env.update(azure.env)
        url, endpoint = azure.new_store_url(), azure.endpoint
    else:
        url = (tmp_path / "big").as_uri()
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "tests.objectstores", url, endpoint, str(2 * GIB)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["size"] == 2 * GIB and result["same"], result
    assert result["put_growth_kib"] < FLAT_KIB, result
    assert result["get_growth_kib"] < FLAT_KIB, result


def test_a_slow_reader_is_not_cut_off(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A listener that stops reading for longer than the store's per-read timeout (shortened
    here to 1 s) still gets every byte: only a store that stalls is timed out, not a slow
    client (obstore's default 30 s whole-request timeout would cut a long playback)."""
    from tapevault.storage import objectstore

    monkeypatch.setattr(objectstore, "READ_TIMEOUT", "1s")
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    store = open_store(s3_server.new_store_url(), scratch=tmp_path)
    data = pattern(8 * 1024 * 1024, 6)
    store.put("slow.wav", [data])

    async def pausing() -> bytes:
        parts = []
        async for part in store.read_range("slow.wav", 0, len(data), 64 * 1024):
            parts.append(part)
            if len(parts) in (1, 40):
                await asyncio.sleep(2.5)
        return b"".join(parts)

    assert asyncio.run(pausing()) == data
