"""Audio on the local filesystem, under one root directory.

Writes are atomic (temporary file, fsync, rename, fsync of the directory), so a crash leaves
either the whole object or nothing under its key. Temporary files live in ``ROOT/.staging`` (no key
can name it) and carry their writer (``tapevault.ingest.scratch``), so the start-up sweep removes
those of a process killed mid-write in one directory instead of walking the whole tree. Keys are
confined to the root: anything that could climb out of it is refused before a path is built.

Reads use ``os.pread`` on the event loop. For page-cache hits that costs about 10 µs per 64 KiB
(see shared/notes/performance.md), far less than a thread hop; the kernel's readahead is asked to
stay ahead of sequential playback with ``posix_fadvise``. The descriptors of recently read
files stay open (:class:`OpenFiles`), so a player's seeks cost one ``pread`` each instead of an
``open``, a ``pread`` and a ``close``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

from tapevault.core.ports import ListedObject, MediaAttributes, ObjectInfo
from tapevault.errors import StorageError
from tapevault.fsutil import fsync_dir
from tapevault.ingest.liveness import process_id
from tapevault.ingest.scratch import scratch_prefix
from tapevault.storage.keys import check_key

DEFAULT_CHUNK = 1024 * 1024
STAGING = ".staging"  # temporaries of puts; a key segment cannot start with "."
OPEN_FILES = 64  # descriptors kept open per process for reads (recently read files)


class _Handle:
    __slots__ = ("doomed", "fd", "links", "refs")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.refs = 1
        self.doomed = False  # out of the table: closed when its last reader lets go
        self.links = _links(os.fstat(fd))  # as opened: any change since means look again


def _links(st: os.stat_result) -> tuple[int, int]:
    """What changes whenever a link of the file is added, removed or renamed: its link count and
    its inode's change time. Not the count alone: a file with another hard link (a backup's
    hard-linked snapshot) keeps a count above 0 when it is deleted or renamed over."""
    return st.st_nlink, st.st_ctime_ns


class OpenFiles:
    """Open read descriptors of recently read files, shared by the responses reading them.

    A descriptor is closed only once no response holds it, so its number can never be reused
    (by the next ``open``: another file, another tenant's) under a reader. A file unlinked or
    replaced since its descriptor was opened (deleted by this process or another, or renamed
    over: its link count or its inode's change time moved, whatever other hard links it has) is
    never read through it: the next reader opens the path again (and finds it missing).
    Thread-safe; at most ``capacity`` idle descriptors stay open."""

    def __init__(self, capacity: int = OPEN_FILES) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._table: OrderedDict[str, _Handle] = OrderedDict()

    def acquire(self, path: str) -> _Handle:
        """A descriptor of ``path`` held for reading; raises ``OSError`` as ``open`` does."""
        with self._lock:
            handle = self._table.get(path)
            if handle is not None:
                handle.refs += 1
                self._table.move_to_end(path)
        if handle is not None:
            try:
                st = os.fstat(handle.fd)
                current = st.st_nlink > 0 and _links(st) == handle.links
            except OSError:
                current = False
            if current:
                return handle
            self._drop(path, handle)
            self.release(handle)
        handle = _Handle(os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)))
        closing: list[int] = []
        with self._lock:
            old = self._table.pop(path, None)
            if old is not None:
                closing += self._doom(old)
            self._table[path] = handle
            while len(self._table) > self.capacity:
                _path, oldest = self._table.popitem(last=False)
                closing += self._doom(oldest)
        for fd in closing:
            os.close(fd)
        return handle

    def release(self, handle: _Handle) -> None:
        with self._lock:
            handle.refs -= 1
            close = handle.doomed and handle.refs == 0
        if close:
            os.close(handle.fd)

    def _drop(self, path: str, handle: _Handle) -> None:
        with self._lock:
            if self._table.get(path) is handle:
                del self._table[path]
                handle.doomed = True

    @staticmethod
    def _doom(handle: _Handle) -> list[int]:
        """Take ``handle`` out of use (lock held): its fd to close now, or none while read."""
        handle.doomed = True
        return [handle.fd] if handle.refs == 0 else []

    def close(self) -> None:
        """Close every idle descriptor (those being read close when their reader lets go)."""
        with self._lock:
            handles = list(self._table.values())
            self._table.clear()
            closing = [fd for h in handles for fd in self._doom(h)]
        for fd in closing:
            os.close(fd)


class LocalStore:
    """An ``ObjectStore`` backed by a directory."""

    def __init__(self, root: Path, owner: str | None = None) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_prefix = f"{self.root}{os.sep}"
        self.staging = self.root / STAGING
        self.staging.mkdir(exist_ok=True, mode=0o700)
        self._temporary_prefix = scratch_prefix("put", owner or process_id())
        self.open_files = OpenFiles()

    def path_for(self, key: str) -> str:
        """The file behind a key; raises ``StorageError`` for a key that could leave the root.

        Confinement is lexical (``storage.keys``): the key grammar admits no absolute path, no
        empty, ``.`` or ``..`` segment and no backslash or NUL, so ``root/key`` stays below
        ``root``. (Resolving symlinks per request cost ~40 µs on the media hot path; nothing
        below the root is a link unless an operator puts one there.)
        """
        return f"{self._root_prefix}{check_key(key)}"

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        path = Path(self.path_for(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=self._temporary_prefix, dir=self.staging)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        fsync_dir(path.parent)
        st = path.stat()
        return ObjectInfo(size=st.st_size, mtime=st.st_mtime)

    def adopt(self, key: str, path: Path) -> ObjectInfo:
        """Take a finished file of this filesystem as the object ``key`` by renaming it (the
        node-local port's fast path for accepted uploads: no copy). ``EXDEV`` from the rename
        means another filesystem; the caller copies instead."""
        target = Path(self.path_for(key))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.fsync(fd)  # the bytes, not only the name, must survive a power cut
        finally:
            os.close(fd)
        os.replace(path, target)
        try:
            fsync_dir(target.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            raise
        st = target.stat()
        return ObjectInfo(size=st.st_size, mtime=st.st_mtime)

    def list_keys(self, prefix: str) -> Iterator[ListedObject]:
        """The objects under a directory-like ``prefix`` (``incoming/``), not recursively."""
        directory = Path(self.path_for(prefix.rstrip("/")))
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield ListedObject(f"{prefix}{entry.name}", ObjectInfo(st.st_size, st.st_mtime))

    def put_media(self, key: str, chunks: Iterable[bytes], media: MediaAttributes) -> ObjectInfo:
        """``put``: the gateway sets the headers of what it serves from a directory itself."""
        return self.put(key, chunks)

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = Path(self.path_for(key))
        if not path.exists():
            raise StorageError(f"object {key!r} is missing from storage")
        yield path

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self.path_for(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(size=st.st_size, mtime=st.st_mtime)

    def delete(self, key: str) -> bool:
        path = Path(self.path_for(key))
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True

    async def read_range(
        self, key: str, offset: int, length: int, chunk_size: int = DEFAULT_CHUNK
    ) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        try:
            handle = self.open_files.acquire(path)
        except FileNotFoundError as exc:
            raise StorageError(f"object {key!r} is missing from storage") from exc
        fd = handle.fd
        try:
            if length > chunk_size and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, offset, length, os.POSIX_FADV_SEQUENTIAL)
            end = offset + length
            position = offset
            while position < end:
                data = os.pread(fd, min(chunk_size, end - position), position)
                if not data:
                    raise StorageError(f"object {key!r} is shorter than its recorded size")
                position += len(data)
                yield data
        finally:
            self.open_files.release(handle)


def open_store(storage_url: str) -> LocalStore:
    """The store of a ``file://`` URL (``tapevault.storage.open_store`` opens every kind)."""
    if storage_url.startswith("file://"):
        return LocalStore(Path(storage_url.removeprefix("file://")))
    raise StorageError(f"unsupported storage URL {storage_url!r}")
