"""The node-local port: working files on this node's own disk, and their promotion to the store.

Three kinds of file live here, and none of them is where a byte becomes durable for good:

- an upload still arriving (``DATA_DIR/spool``, ``tapevault.ingest.scratch.Spool``), written
  through ``ScratchWriter``;
- a live stream's spool (``DATA_DIR/streams/<recording_id>.raw``): its acknowledgements are
  durable on this node's disk (``tapevault.ingest.durable`` appends and fsyncs it);
- a decoder's or mixer's temporary output (``DATA_DIR/work``, ``temporary``).

``promote`` is the one door from here into the ``ObjectStore``: an accepted upload is promoted
to ``incoming/<recording_id>.src`` before it is acknowledged, a closed stream to
``incoming/<recording_id>.raw`` before its finalization job is queued, a finished WAV to its
storage key. A store on this filesystem that can ``Adopt`` takes the file by rename (one fsync,
no copy: the local store's fast path); any other gets a streamed copy in 1 MiB chunks.

``promote_range`` copies a slice of a live stream's spool (its acknowledged prefix, grown since
the last copy) into the store while the stream goes on (``tapevault.ingest.streamcopy``): read
with ``pread`` in chunks from a descriptor of its own, never the writer's.

The node's identity (``node_id``) is kept in ``DATA_DIR/node-id``: every process serving from
this data directory shares it, and a node whose disk is replaced gets a new one, which is what
tells a stream's spool lost (``Recording.spool_node``).

Temporaries carry their writer in their names (``scratch_prefix``), so the scratch sweep removes
those a killed process left behind (they may hold PHI).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tapevault.core.ports import Adopt, ObjectInfo, ObjectStore
from tapevault.core.sources import upload_key
from tapevault.errors import StorageError
from tapevault.ingest.liveness import node_name
from tapevault.ingest.scratch import scratch_prefix
from tapevault.storage.local import LocalStore
from tapevault.storage.timed import unwrapped

log = logging.getLogger("tapevault.storage")

CHUNK = 1024 * 1024
SPOOL = "spool"
STREAMS = "streams"
WORK = "work"
LEGACY_INCOMING = "incoming"  # where accepted uploads waited before they went through the store


def read_chunks(path: Path, size: int = CHUNK) -> Iterator[bytes]:
    """The file's bytes in chunks of at most ``size`` (memory stays flat whatever its size)."""
    with path.open("rb") as f:
        yield from _chunks_of(f, size)


def _chunks_of(f: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


def _range_chunks(fd: int, offset: int, length: int, size: int = CHUNK) -> Iterator[bytes]:
    """``length`` bytes from ``offset`` of ``fd``; a file shorter than that is an error (the
    caller asked for bytes it was told are on disk)."""
    end = offset + length
    while offset < end:
        chunk = os.pread(fd, min(size, end - offset), offset)
        if not chunk:
            raise OSError(errno.EIO, f"the spool ended at byte {offset}, before {end}")
        offset += len(chunk)
        yield chunk


def read_node_id(data_dir: Path) -> str:
    """This data directory's node name (``liveness.node_name``: made once, whole, in
    ``DATA_DIR/node-id``); a damaged one is a storage error naming the file."""
    try:
        return node_name(data_dir)
    except (OSError, ValueError) as exc:
        raise StorageError(f"the node name in {data_dir}: {exc}") from exc


class ScratchWriter:
    """A new node-local file (0600, never an existing one) written chunk by chunk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, data: bytes) -> None:
        assert self._fd is not None, "write after close"
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def abort(self) -> None:
        """Close and remove: nothing of a failed body stays."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class NodeLocalDisk:
    """``NodeLocalFiles`` on this node's data directory, promoting into ``store``."""

    def __init__(self, data_dir: Path, store: ObjectStore, owner: str) -> None:
        self.data_dir = data_dir
        self.store = store
        self.owner = owner
        self.spool_dir = data_dir / SPOOL
        self.streams_dir = data_dir / STREAMS
        self.work_dir = data_dir / WORK
        for directory in (self.streams_dir, self.work_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.node_id = read_node_id(data_dir)

    # NodeLocalFiles ---------------------------------------------------------------------------

    def size(self, path: Path) -> int:
        return path.stat().st_size

    def promote(self, path: Path, key: str, *, keep: bool = False) -> ObjectInfo:
        if not keep and isinstance(self.store, Adopt):
            try:
                return self.store.adopt(key, path)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # The store's root is on another filesystem: copy instead.
        # Opened before the store sees it: a missing file is FileNotFoundError whatever the
        # store's adapter makes of errors raised while it reads the chunks.
        with path.open("rb") as source:
            info = self.store.put(key, _chunks_of(source))
        if not keep:
            self.discard(path)
        return info

    def stream_spool(self, recording_id: str) -> Path:
        return self.streams_dir / f"{recording_id}.raw"

    def store_on_this_disk(self) -> bool:
        """Whether the store keeps its objects on this node's own filesystem (the default local
        store, ``DATA_DIR/audio``): a copy of a spool there survives nothing the spool does not,
        and every copy's fsync would compete with the live streams' group commits."""
        backend = unwrapped(self.store)
        if not isinstance(backend, LocalStore):
            return False
        try:
            return os.stat(backend.root).st_dev == os.stat(self.streams_dir).st_dev
        except OSError:
            return False

    def promote_range(self, path: Path, key: str, offset: int, length: int) -> ObjectInfo:
        """Store ``length`` bytes of the node-local file from ``offset`` as the object ``key``
        (atomically, streamed in ``CHUNK``s: memory stays flat however long the range)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return self.store.put(key, _range_chunks(fd, offset, length))
        finally:
            os.close(fd)

    def discard(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    # the rest of this node's working files ------------------------------------------------------

    def exists(self, path: Path) -> bool:
        return path.exists()

    @contextlib.contextmanager
    def temporary(self, kind: str, suffix: str = "") -> Iterator[Path]:
        """A new empty file of ``kind`` (a ``scratch_prefix`` kind) for a decoder or mixer to
        write, removed when the block ends, whatever happened."""
        fd, name = tempfile.mkstemp(
            prefix=scratch_prefix(kind, self.owner), suffix=suffix, dir=self.work_dir
        )
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            self.discard(path)

    def stream_spools(self) -> list[Path]:
        """Every live-stream spool on this node (for the sweep)."""
        return sorted(self.streams_dir.glob("*.raw"))

    def scratch_dirs(self) -> list[Path]:
        """Every directory that may hold temporaries of a dead writer (for the sweep)."""
        return [self.data_dir, self.work_dir, self.data_dir / LEGACY_INCOMING, self.streams_dir]

    def promote_legacy_uploads(self) -> int:
        """Accepted uploads that an older version left in ``DATA_DIR/incoming`` (it renamed them
        there itself), moved into the store where finalization now looks; how many."""
        legacy = self.data_dir / LEGACY_INCOMING
        moved = 0
        for path in sorted(legacy.glob("*.src")) if legacy.is_dir() else ():
            try:
                self.promote(path, upload_key(path.stem))
            except FileNotFoundError:
                continue
            except StorageError as exc:  # a name no recording has (an operator's file): left
                log.warning("left %s in place: %s", path, exc)
                continue
            moved += 1
        return moved
