"""Resumable-upload state on local disk: the storage half of tus (``tapevault.http.tus``).

Each upload is two files in one directory:

- ``<id>.bin``  the bytes received so far;
- ``<id>.json`` length, offset, metadata, owner (an opaque string: the partner id), session id,
  created/expires in Unix seconds and, once complete, what the completion callback returned.

Durability: a write is acknowledged only after ``commit``: the ``.bin`` is fsynced, then its size is
recorded as the offset in a new ``.json`` written to a temporary file and renamed over the old one.
A crash between the two leaves the ``.bin`` longer than the recorded offset; the next append cuts
it back to the offset, so unacknowledged bytes never count and acknowledged ones are never lost.

Concurrency: a writer holds an exclusive ``flock`` on the ``.bin`` for the whole PATCH (and the
completion that may follow it); a second writer gets ``UploadBusy`` instead of interleaving bytes.
``flock`` also holds across processes. Readers (HEAD) read the last committed ``.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
from collections.abc import AsyncIterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from tapevault.core.clock import Clock, SystemClock
from tapevault.errors import (
    Conflict,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    StorageError,
    TapevaultError,
)
from tapevault.fsutil import NO_SPACE

log = logging.getLogger("tapevault.ingest")

UPLOAD_NOT_FOUND = "Upload not found."
_ID = re.compile(r"[A-Za-z0-9_-]{22}")
# Files without a state file (a create interrupted by a crash) and temporary files are removed by
# ``expire`` once they are this old; younger ones may belong to a create still in progress.
ORPHAN_GRACE_SECONDS = 3600


class OffsetMismatch(Conflict):
    """The client's Upload-Offset is not the upload's current offset."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"Upload-Offset {got} does not match the upload's offset {expected}.")
        self.expected = expected
        self.got = got


class UploadBusy(Conflict):
    """Another request is writing this upload (perhaps a dropped one the server has not noticed)."""

    def __init__(self) -> None:
        super().__init__("Another request is writing this upload; retry shortly.")


@dataclass(frozen=True)
class Upload:
    upload_id: str
    owner: str
    length: int
    offset: int
    metadata: Mapping[str, str]
    session_id: str | None
    created_at: int
    expires_at: int
    # What the completion callback returned; None until the upload became a recording.
    result: Mapping[str, Any] | None = None

    @property
    def complete(self) -> bool:
        return self.result is not None


def new_upload_id() -> str:
    """128 random bits, URL-safe base64 without padding (22 characters)."""
    return secrets.token_urlsafe(16)


def valid_upload_id(upload_id: str) -> bool:
    return _ID.fullmatch(upload_id) is not None


class TusStore:
    """Upload state under ``root``; every lookup is scoped to an owner."""

    def __init__(self, root: Path, *, max_size: int, clock: Clock | None = None) -> None:
        if max_size < 0:
            raise ValueError("max_size must not be negative")
        self.root = root
        self.max_size = max_size
        self.clock = clock or SystemClock()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    # --- the operations ------------------------------------------------------------------

    def create(
        self,
        owner: str,
        length: int,
        metadata: Mapping[str, str],
        expires_at: int,
        *,
        session_id: str | None = None,
    ) -> str:
        """A new empty upload; ``session_id`` defaults to ``metadata["session_id"]``."""
        if length < 0:
            raise InvalidRequest("Upload-Length must not be negative.")
        if length > self.max_size:
            raise PayloadTooLarge(self.max_size)
        upload_id = new_upload_id()
        upload = Upload(
            upload_id=upload_id,
            owner=owner,
            length=length,
            offset=0,
            metadata=dict(metadata),
            session_id=session_id if session_id is not None else metadata.get("session_id"),
            created_at=int(self.clock.now()),
            expires_at=expires_at,
        )
        try:
            # The data file first: a crash before the state file leaves an orphan that
            # ``expire`` removes, never a state file whose data is missing.
            os.close(os.open(self._bin(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._write_state(upload)
        except OSError as exc:
            self._bin(upload_id).unlink(missing_ok=True)
            raise storage_failure(exc, f"cannot create upload {upload_id}") from exc
        return upload_id

    def get(self, owner: str, upload_id: str) -> Upload:
        """The upload, if it exists and belongs to ``owner``; else ``NotFound`` (same for both)."""
        if not valid_upload_id(upload_id):
            raise NotFound(UPLOAD_NOT_FOUND)
        try:
            upload = self._read_state(upload_id)
        except FileNotFoundError:
            raise NotFound(UPLOAD_NOT_FOUND) from None
        if upload.owner != owner:
            raise NotFound(UPLOAD_NOT_FOUND)
        return upload

    @contextlib.contextmanager
    def open(self, owner: str, upload_id: str) -> Iterator[UploadWriter]:
        """Exclusive access to one upload for appending, completing or terminating it.

        Raises ``NotFound`` (unknown or foreign) or ``UploadBusy`` (another writer holds it).
        The state is read again once the lock is held, so the writer sees the latest commit.
        """
        self.get(owner, upload_id)
        try:
            fd: int | None = os.open(self._bin(upload_id), os.O_RDWR)
        except FileNotFoundError:
            fd = None  # completed (data already handed over) or terminated meanwhile
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise UploadBusy() from None
            upload = self.get(owner, upload_id)
            yield UploadWriter(self, upload, fd)
        finally:
            if fd is not None:
                os.close(fd)

    async def append(
        self,
        owner: str,
        upload_id: str,
        offset: int,
        chunks: AsyncIterable[bytes],
        *,
        expires_at: int | None = None,
    ) -> Upload:
        """Append ``chunks`` at ``offset`` (see ``UploadWriter.append``)."""
        with self.open(owner, upload_id) as writer:
            return await writer.append(offset, chunks, expires_at=expires_at)

    def terminate(self, owner: str, upload_id: str) -> None:
        """Remove the upload and its bytes (``UploadBusy`` while a PATCH is writing it)."""
        with self.open(owner, upload_id) as writer:
            writer.terminate()

    def expire(self, now: float) -> list[str]:
        """Remove every upload whose ``expires_at`` has passed; return their ids.

        Uploads being written right now are skipped (their PATCH will extend the expiry); so are
        unreadable state files, which are logged. Orphaned data and temporary files past the
        grace period go too.
        """
        removed: list[str] = []
        for state in self.root.glob("*.json"):
            upload_id = state.stem
            if not valid_upload_id(upload_id):
                continue
            try:
                upload = self._read_state(upload_id)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("unreadable tus state file %s", state)
                continue
            if upload.expires_at > now:
                continue
            try:
                with self.open(upload.owner, upload_id) as writer:
                    if writer.upload.expires_at <= now:
                        writer.terminate()
                        removed.append(upload_id)
            except (UploadBusy, NotFound):
                continue
        self._remove_orphans(now)
        return removed

    # --- files ---------------------------------------------------------------------------

    def _bin(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.bin"

    def _json(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.json"

    def data_path(self, upload_id: str) -> Path:
        return self._bin(upload_id)

    def _read_state(self, upload_id: str) -> Upload:
        raw = json.loads(self._json(upload_id).read_bytes())
        result = raw.get("result")
        return Upload(
            upload_id=upload_id,
            owner=str(raw["owner"]),
            length=int(raw["length"]),
            offset=int(raw["offset"]),
            metadata={str(k): str(v) for k, v in raw["metadata"].items()},
            session_id=None if raw.get("session_id") is None else str(raw["session_id"]),
            created_at=int(raw["created_at"]),
            expires_at=int(raw["expires_at"]),
            result=None if result is None else dict(result),
        )

    def _write_state(self, upload: Upload) -> None:
        """Write the state file atomically: temporary file, fsync, rename, fsync the directory."""
        payload = json.dumps(
            {
                "owner": upload.owner,
                "length": upload.length,
                "offset": upload.offset,
                "metadata": dict(upload.metadata),
                "session_id": upload.session_id,
                "created_at": upload.created_at,
                "expires_at": upload.expires_at,
                "result": None if upload.result is None else dict(upload.result),
            },
            separators=(",", ":"),
            default=str,
        ).encode()
        tmp = self.root / f".{upload.upload_id}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, payload)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        try:
            os.replace(tmp, self._json(upload.upload_id))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._sync_dir()

    def _remove(self, upload_id: str) -> None:
        # State first: a crash in between leaves an orphaned .bin, which ``expire`` removes.
        self._json(upload_id).unlink(missing_ok=True)
        self._bin(upload_id).unlink(missing_ok=True)
        self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _remove_orphans(self, now: float) -> None:
        cutoff = now - ORPHAN_GRACE_SECONDS
        for path in [*self.root.glob("*.bin"), *self.root.glob(".*.tmp")]:
            try:
                if path.stat().st_mtime > cutoff:
                    continue
                if path.suffix == ".bin" and self._json(path.stem).exists():
                    continue
                path.unlink(missing_ok=True)
            except OSError:
                continue


class UploadWriter:
    """One upload while its lock is held (see ``TusStore.open``)."""

    def __init__(self, store: TusStore, upload: Upload, fd: int | None) -> None:
        self._store = store
        self._fd = fd
        self.upload = upload

    @property
    def data_path(self) -> Path:
        return self._store.data_path(self.upload.upload_id)

    async def append(
        self, offset: int, chunks: AsyncIterable[bytes], *, expires_at: int | None = None
    ) -> Upload:
        """Write ``chunks`` at ``offset``; return the upload with its new, durable offset.

        ``offset`` must equal the current offset (``OffsetMismatch``), and the bytes may not run
        past the declared length (``PayloadTooLarge``; the chunk that would is not written).
        Whatever arrived before the stream ended, failed or was cancelled is fsynced and
        committed: a dropped connection loses nothing it delivered. ``expires_at`` (sliding
        expiry) is recorded in the same commit.
        """
        upload = self.upload
        if upload.complete:
            if offset != upload.length:
                raise OffsetMismatch(upload.length, offset)
            raise Conflict("The upload is already complete.")
        if self._fd is None:
            raise StorageError(f"the data file of upload {upload.upload_id} is missing")
        if offset != upload.offset:
            raise OffsetMismatch(upload.offset, offset)
        fd = self._fd
        size = offset
        try:
            # Bytes past the committed offset were never acknowledged (a crash before commit).
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            async for chunk in chunks:
                if size + len(chunk) > upload.length:
                    raise PayloadTooLarge(upload.length - offset)
                _write_all(fd, chunk)
                size += len(chunk)
        except OSError as exc:
            raise storage_failure(exc, f"cannot write upload {upload.upload_id}") from exc
        finally:
            # Shielded: a cancelled request still commits what it wrote.
            with anyio.CancelScope(shield=True):
                self.upload = await anyio.to_thread.run_sync(self._commit, size, expires_at)
        return self.upload

    def _commit(self, size: int, expires_at: int | None) -> Upload:
        """Make the first ``size`` bytes durable and record them as the offset. Whatever is past
        it (a chunk a full disk cut in half) is cut off, and when the commit itself fails the
        file goes back to the last committed offset: no byte the client was not told of stays
        on a disk that may be full."""
        assert self._fd is not None
        try:
            if os.fstat(self._fd).st_size > size:
                os.ftruncate(self._fd, size)
            os.fsync(self._fd)
            durable = os.fstat(self._fd).st_size
            updated = replace(
                self.upload,
                offset=min(durable, size),
                expires_at=self.upload.expires_at if expires_at is None else expires_at,
            )
            if updated != self.upload:
                self._store._write_state(updated)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.upload.offset)
            raise storage_failure(exc, f"cannot commit upload {self.upload.upload_id}") from exc
        return updated

    def complete(self, result: Mapping[str, Any], expires_at: int) -> Upload:
        """Record the completion result and drop the data (it now lives in the recording).

        The state file stays until ``expires_at``, so a client that asks again (HEAD) learns the
        upload is complete instead of starting over.
        """
        done = replace(
            self.upload, offset=self.upload.length, result=dict(result), expires_at=expires_at
        )
        try:
            self._store._write_state(done)
            self.data_path.unlink(missing_ok=True)
        except OSError as exc:
            raise storage_failure(exc, f"cannot complete upload {done.upload_id}") from exc
        self.upload = done
        return done

    def terminate(self) -> None:
        try:
            self._store._remove(self.upload.upload_id)
        except OSError as exc:
            raise StorageError(f"cannot remove upload {self.upload.upload_id}: {exc}") from exc


def storage_failure(exc: OSError, what: str) -> TapevaultError:
    """A full disk is the client's 507 (the upload can resume once there is space); anything
    else is an internal storage error."""
    if exc.errno in NO_SPACE:
        return InsufficientStorage(
            "The server's disk is full: the bytes of this request were not kept. "
            "HEAD the upload and resume later."
        )
    return StorageError(f"{what}: {exc}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
