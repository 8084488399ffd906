"""The local object store: atomic writes, confined keys, bounded ranged reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tapevault.errors import StorageError
from tapevault.storage.local import LocalStore, OpenFiles


async def collect(store: LocalStore, key: str, offset: int, length: int, chunk: int) -> bytes:
    return b"".join([c async for c in store.read_range(key, offset, length, chunk)])


async def test_put_stat_read_delete(tmp_path: Path) -> None:
    """What was put is read back byte-exact, in bounded chunks, then deleted."""
    store = LocalStore(tmp_path)
    data = bytes(range(256)) * 1000
    info = store.put("p/s/r.wav", [data[:1000], data[1000:]])
    assert info.size == len(data)
    assert store.stat("p/s/r.wav") is not None
    chunks = [c async for c in store.read_range("p/s/r.wav", 10, 50_000, 4096)]
    assert max(len(c) for c in chunks) <= 4096
    assert b"".join(chunks) == data[10:50_010]
    assert store.delete("p/s/r.wav") is True
    assert store.stat("p/s/r.wav") is None
    assert store.delete("p/s/r.wav") is False


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "/etc/passwd", "a//b", "", ".hidden", "a\0b", "a\\b", "a/./b"]
)
def test_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    """Traversal, absolute, empty, NUL and odd keys are refused before touching disk."""
    store = LocalStore(tmp_path / "root")
    with pytest.raises(StorageError):
        store.put(key, [b"x"])


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    """A write that fails midway leaves neither the object nor a temporary file."""
    store = LocalStore(tmp_path)

    def chunks() -> object:
        yield b"partial"
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError):
        store.put("a/b.wav", chunks())  # type: ignore[arg-type]
    assert store.stat("a/b.wav") is None
    assert [p.name for p in (tmp_path / "a").iterdir()] == []


def test_overwrite_is_atomic(tmp_path: Path) -> None:
    """Replacing an object swaps it whole."""
    store = LocalStore(tmp_path)
    store.put("k.wav", [b"old"])
    store.put("k.wav", [b"newer"])
    assert (tmp_path / "k.wav").read_bytes() == b"newer"


async def test_short_file_is_an_error(tmp_path: Path) -> None:
    """Reading past what is on disk raises instead of silently sending less."""
    store = LocalStore(tmp_path)
    store.put("k.wav", [b"12345"])
    with pytest.raises(StorageError):
        await collect(store, "k.wav", 0, 10, 4)


async def test_kept_descriptors_never_serve_a_deleted_or_replaced_file(tmp_path: Path) -> None:
    """Reads reuse a file's open descriptor, but a file deleted (here or by another process)
    is missing on the next read, and one replaced under its key is read anew."""
    store = LocalStore(tmp_path)
    store.put("p/s/a.wav", [b"A" * 100])
    assert await collect(store, "p/s/a.wav", 0, 100, 64) == b"A" * 100
    os.unlink(store.path_for("p/s/a.wav"))  # as another process's deletion would
    with pytest.raises(StorageError, match="missing"):
        await collect(store, "p/s/a.wav", 0, 10, 64)
    store.put("p/s/b.wav", [b"B" * 100])
    assert await collect(store, "p/s/b.wav", 0, 10, 64) == b"B" * 10
    store.put("p/s/b.wav", [b"C" * 100])  # renamed over the old file
    assert await collect(store, "p/s/b.wav", 0, 10, 64) == b"C" * 10


async def test_kept_descriptors_are_bounded_and_never_closed_under_a_reader(
    tmp_path: Path,
) -> None:
    """At most ``capacity`` idle descriptors stay open; one evicted while a response reads
    from it stays open until that response ends (its number is never reused under it)."""
    files = OpenFiles(capacity=2)
    paths = []
    for name in "abcd":
        path = tmp_path / name
        path.write_bytes(name.encode() * 10)
        paths.append(str(path))
    held = files.acquire(paths[0])
    for path in paths[1:]:
        files.release(files.acquire(path))
    assert os.pread(held.fd, 3, 0) == b"aaa"  # evicted, still open for its reader
    files.release(held)
    with pytest.raises(OSError):
        os.fstat(held.fd)  # closed once its reader let go
    again = files.acquire(paths[3])
    assert os.pread(again.fd, 2, 0) == b"dd"
    files.release(again)
    files.close()
    with pytest.raises(OSError):
        os.fstat(again.fd)


async def test_kept_descriptors_see_a_deletion_or_replacement_despite_another_link(
    tmp_path: Path,
) -> None:
    """A file with a second hard link (a backup tool's hard-linked snapshot, `cp -al`,
    rsnapshot) keeps a link count above 0 when it is deleted or renamed over: the kept
    descriptor must still not serve it (what is read is what the path names now)."""
    store = LocalStore(tmp_path / "audio")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    store.put("p/s/a.wav", [b"A" * 100])
    os.link(store.path_for("p/s/a.wav"), snapshot / "a.wav")
    assert await collect(store, "p/s/a.wav", 0, 10, 64) == b"A" * 10
    store.put("p/s/a.wav", [b"C" * 100])  # renamed over: the old inode lives on in the snapshot
    assert await collect(store, "p/s/a.wav", 0, 10, 64) == b"C" * 10
    os.link(store.path_for("p/s/a.wav"), snapshot / "c.wav")
    assert store.delete("p/s/a.wav")
    with pytest.raises(StorageError, match="missing"):
        await collect(store, "p/s/a.wav", 0, 10, 64)


async def test_kept_descriptors_see_a_replacement_after_a_snapshot_taken_while_open(
    tmp_path: Path,
) -> None:
    """The snapshot's link is made while the descriptor is kept, then the file is renamed over:
    its link count is back where it was when the descriptor was opened, but it was replaced."""
    store = LocalStore(tmp_path / "audio")
    store.put("p/s/a.wav", [b"A" * 100])
    assert await collect(store, "p/s/a.wav", 0, 10, 64) == b"A" * 10
    os.link(store.path_for("p/s/a.wav"), tmp_path / "snapshot-a.wav")
    store.put("p/s/a.wav", [b"C" * 100])
    assert await collect(store, "p/s/a.wav", 0, 10, 64) == b"C" * 10
