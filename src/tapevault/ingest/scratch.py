"""Node-local scratch files, and the sweep that removes those a crash left behind.

Upload bodies are spooled to ``DATA_DIR/spool`` before they are checked, and the worker decodes
into temporary files in ``DATA_DIR/work`` (``tapevault.storage.node_local``). Such files hold
PHI; a process killed mid-request or mid-decode must not leave them for ever. Each name carries
its writer, ``<id>~<host>~<pid>~<start>`` (``tapevault.ingest.liveness``: the start time
tells a reused pid apart), so a sweep can tell which files a live process may still be
writing, even when several processes (``TAPEVAULT_PROCESSES``, ``tapevault worker``) share one
data directory:

- a file of a process of this host that is gone: removed at once (nobody can be writing it);
- a file of this process: removed when it is not among the files this process has open (the
  spool's open set) and older than ``GRACE_SECONDS``; temporaries without an open set are left
  to their ``finally`` blocks;
- a file of a live process of this host: never (it sweeps its own);
- a file of another node (a second data directory's process, on this host or another), of
  another host, or an untagged one (older versions): only past ``STALE_SECONDS``.

An accepted upload is promoted into the object store under ``incoming/`` before its recording row
is committed (so the bytes are durable first); a crash between the two leaves an object no row
names, which ``sweep_unrecorded`` removes once it is ``ORPHAN_SECONDS`` old.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tapevault.core.model import Recording, RecordingStatus
from tapevault.core.ports import ListKeys, ObjectStore
from tapevault.core.sources import INCOMING_PREFIX, recording_of_source
from tapevault.core.streamparts import STREAMS_PREFIX, recording_of_part
from tapevault.ingest.liveness import is_gone, node_of

log = logging.getLogger("tapevault.ingest")

SEP = "~"
GRACE_SECONDS = 60.0
STALE_SECONDS = 24 * 3600.0
ORPHAN_SECONDS = 3600.0


def owner_tag(owner: str) -> str:
    """The owner id ``host:pid:start`` as it appears in file names."""
    return owner.replace(":", SEP)


def spooled_owner(name: str) -> str | None:
    """The writer of a spool file ``<id>~<host>~<pid>~<start>.part``, or None (untagged)."""
    parts = name.removesuffix(".part").split(SEP)
    return ":".join(parts[1:]) if len(parts) == 4 else None


def scratch_prefix(kind: str, owner: str) -> str:
    """A ``tempfile`` prefix for hidden temporaries of ``kind`` written by ``owner``; the random
    part ``mkstemp`` adds comes after it (``.kind-~<host>~<pid>~<start>~<random><suffix>``)."""
    return f".{kind}-{SEP}{owner_tag(owner)}{SEP}"


def temporary_owner(name: str) -> str | None:
    """The writer of a ``scratch_prefix`` temporary, or None (untagged)."""
    parts = name.split(SEP)
    return ":".join(parts[1:4]) if len(parts) == 5 else None


class Spool:
    """Spooled upload bodies of this process, in one shared directory."""

    def __init__(self, directory: Path, owner: str) -> None:
        self.directory = directory
        self.owner = owner
        self._tag = owner_tag(owner)
        self._open: set[str] = set()
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    @contextlib.contextmanager
    def reserve(self) -> Iterator[Path]:
        """A fresh path for one body, known to be in use until the block ends, then removed
        (an upload that was accepted has been moved away by then)."""
        name = f"{uuid.uuid4().hex}{SEP}{self._tag}.part"
        with self._lock:
            self._open.add(name)
        try:
            yield self.directory / name
        finally:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()
            with self._lock:
                self._open.discard(name)

    def in_use(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._open)

    def sweep(self, now: float | None = None) -> int:
        """Remove the spool files no live process writes (see the module docstring)."""
        return sweep(
            self.directory.glob("*.part"), self.owner, self.in_use(), now, owner_of=spooled_owner
        )


def sweep_temporaries(
    directories: Iterable[Path], kinds: Iterable[str], owner: str, now: float | None = None
) -> int:
    """Remove the temporaries of ``kinds`` (``scratch_prefix``) that dead writers left."""
    patterns = [f".{kind}-*" for kind in kinds]
    paths = (p for d in directories for pattern in patterns for p in d.glob(pattern))
    return sweep(paths, owner, None, now, owner_of=temporary_owner)


def sweep(
    paths: Iterable[Path],
    me: str,
    mine_open: frozenset[str] | None,
    now: float | None,
    *,
    owner_of: Callable[[str], str | None],
) -> int:
    """Remove each of ``paths`` that no live process can be writing; returns how many went."""
    now = time.time() if now is None else now
    host = socket.gethostname()
    removed = 0
    for path in paths:
        owner = owner_of(path.name)
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if owner == me:
            doomed = mine_open is not None and path.name not in mine_open and age > GRACE_SECONDS
        elif owner is not None and node_of(owner) in (host, node_of(me)):
            doomed = is_gone(owner, me)  # a process of this node (or host) that is gone
        else:
            doomed = age > STALE_SECONDS
        if doomed:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot remove the stale scratch file %s: %s", path, exc)
                continue
            removed += 1
    return removed


def sweep_unrecorded(
    store: ObjectStore, recording_of: Callable[[str], Recording | None], now: float | None = None
) -> int:
    """Remove incoming objects (``incoming/<recording_id>.src|.raw``) nothing will finalize: of
    a recording never committed (a crash between the promotion and the commit), or of one that
    is available or gone already (a stream closed after recovery had taken it over and
    finished it). Those of recordings still receiving, processing or failed stay (a failed
    one's audio is kept for an operator to queue again). Live streams' parts
    (``streams/<recording_id>/...``, core/streamparts.py) go by the same rule. A store that
    cannot list its objects (no ``ListKeys``) is skipped: a bucket lifecycle rule on
    ``incoming/`` and ``streams/`` does this there."""
    if not isinstance(store, ListKeys):
        return 0
    now = time.time() if now is None else now
    removed = 0
    listed_keys = (
        (listed, id_of(listed.key))
        for prefix, id_of in (
            (INCOMING_PREFIX, recording_of_source),
            (STREAMS_PREFIX, recording_of_part),
        )
        for listed in store.list_keys(prefix)
    )
    # A live stream has a part per interval, listed one after the other: the recording is
    # asked about once for all of them, not once a part.
    last: tuple[str, bool] | None = None
    for listed, recording_id in listed_keys:
        if recording_id is None or now - listed.info.mtime <= ORPHAN_SECONDS:
            continue
        if last is None or last[0] != recording_id:
            last = (recording_id, _finished_with(recording_of(recording_id)))
        if not last[1]:
            continue
        if store.delete(listed.key):
            removed += 1
    return removed


def sweep_stream_spools(
    spools: Iterable[Path],
    recording_of: Callable[[str], Recording | None],
    now: float | None = None,
) -> int:
    """Remove live-stream spools (``<recording_id>.raw``) nothing needs any more, by the same
    rule as ``sweep_unrecorded``: their stream was finalized (or deleted) from the store's copy,
    or never recorded. Spools of streams still receiving, processing or failed stay."""
    now = time.time() if now is None else now
    removed = 0
    for path in spools:
        try:
            if now - path.stat().st_mtime <= ORPHAN_SECONDS:
                continue
            if not _finished_with(recording_of(path.stem)):
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed


def _finished_with(recording: Recording | None) -> bool:
    return recording is None or recording.status in _DONE


_DONE = (RecordingStatus.AVAILABLE, RecordingStatus.EXPIRED, RecordingStatus.DELETED)
