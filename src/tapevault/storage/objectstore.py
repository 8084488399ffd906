"""Audio in an object store (S3 and S3-compatible servers, Google Cloud Storage, Azure Blob),
through obstore, the Python binding of the Rust ``object_store`` crate.

``TAPEVAULT_STORAGE_URL`` names the bucket and a prefix (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``az://container/prefix``); credentials come from each provider's
standard variables (``AWS_*``, ``GOOGLE_*``, ``AZURE_STORAGE_*``), which obstore reads itself.
``TAPEVAULT_STORAGE_ENDPOINT`` points at an S3-compatible server (MinIO, Ceph RGW, R2) or an
emulator; an ``http://`` endpoint is taken as the operator's explicit consent to plain HTTP.

What the adapter decides, and why:

- Timeouts. obstore's default 30 s request timeout covers a streamed body, so a listener reading
  a long range slowly would be cut off mid-file. The whole-request timeout is therefore long
  (``REQUEST_TIMEOUT``); a store that stalls is caught by the per-read timeout instead, and one
  that is down by the connect timeout and a short retry budget, so a request fails within
  seconds (503) instead of hanging for obstore's default three minutes of retries. Puts use a
  client of their own with a long per-read timeout: the store may take minutes to answer the
  completion of a large multipart upload (S3 documents it; moto, busy, took over a minute).
- Memory. Reads stream in chunks of at most ``chunk_size``; puts of more than ``PART_SIZE``
  bytes stream as a multipart upload with a bounded number of parts in flight, smaller ones go
  in one request (a multipart upload of a peaks file would cost three round trips).
- Atomicity comes from the providers: a single PUT or a completed multipart upload (a committed
  block list on Azure) becomes visible whole, and a failed one is aborted, leaving nothing.
- Errors. A missing object is ``None`` (stat) or ``StorageError`` (reads of an object the
  metadata says exists); everything else the provider or the network says becomes
  ``StoreUnavailable`` (503), with the provider's words in the log, never in an answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import AzureStore, GCSStore, S3Store

from tapevault.core.ports import ListedObject, MediaAttributes, ObjectInfo
from tapevault.errors import ConfigError, StorageError, StoreUnavailable
from tapevault.ingest.liveness import process_id
from tapevault.ingest.scratch import scratch_prefix
from tapevault.storage.keys import check_key

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

log = logging.getLogger("tapevault.storage")

SCHEMES = ("s3", "gs", "az")
COPY_KIND = "copy"  # the scratch_prefix kind of local_copy's downloads
DEFAULT_CHUNK = 1024 * 1024
PART_SIZE = 8 * 1024 * 1024  # S3 takes parts of 5 MiB and more (but the last)
PARTS_IN_FLIGHT = 3  # with PART_SIZE: at most ~32 MiB of a put in memory
REQUEST_TIMEOUT = "24h"  # covers a whole streamed body: see the module docstring
READ_TIMEOUT = "60s"  # no byte from the store for this long: it stalled
WRITE_READ_TIMEOUT = "15m"  # the answer to completing a multipart upload may take minutes
CONNECT_TIMEOUT = "5s"
MAX_PRESIGN_SECONDS = 7 * 86400  # S3 SigV4's limit; the seeds' lifetimes are far below it
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


_ALLOW_HTTP_VARIABLES = {
    "s3": "AWS_ALLOW_HTTP",
    "gs": "GOOGLE_ALLOW_HTTP",
    "az": "AZURE_ALLOW_HTTP",
}


_Store = S3Store | GCSStore | AzureStore


def _open(url: str, scheme: str, endpoint: str | None, read_timeout: str) -> _Store:
    options = _client_options(scheme, endpoint, read_timeout)
    extra: dict[str, Any] = {} if endpoint is None else {"endpoint": endpoint}
    try:
        if scheme == "s3":
            return S3Store.from_url(url, client_options=options, retry_config=_RETRY, **extra)
        if scheme == "gs":
            return GCSStore.from_url(url, client_options=options, retry_config=_RETRY, **extra)
        return AzureStore.from_url(url, client_options=options, retry_config=_RETRY, **extra)
    except (ObstoreError, ValueError) as exc:
        raise ConfigError(
            "TAPEVAULT_STORAGE_URL", f"cannot use {url!r}: {str(exc).splitlines()[0]}"
        ) from exc


def _client_options(scheme: str, endpoint: str | None, read_timeout: str) -> ClientConfig:
    options: ClientConfig = {
        "timeout": REQUEST_TIMEOUT,
        "read_timeout": read_timeout,
        "connect_timeout": CONNECT_TIMEOUT,
    }
    # Client options given here replace obstore's reading of ``*_ALLOW_HTTP``: honour it.
    allowed = os.environ.get(_ALLOW_HTTP_VARIABLES.get(scheme, ""), "").lower() in ("true", "1")
    if allowed or (endpoint is not None and endpoint.startswith("http://")):
        options["allow_http"] = True
    return options


_RETRY: RetryConfig = {
    "max_retries": 2,
    "retry_timeout": timedelta(seconds=10),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2)},
}


def _unavailable(key: str, exc: BaseException) -> NoReturn:
    log.warning("object store failed on %r: %s", key, str(exc).splitlines()[0][:500])
    raise StoreUnavailable("The audio store cannot be reached; try again shortly.") from exc


def content_disposition(filename: str | None) -> str:
    """``inline`` (a player plays it) with a filename a browser saves it under; characters a
    header or a filesystem could misread become ``_``."""
    if not filename:
        return "inline"
    safe = _FILENAME_UNSAFE.sub("_", filename)[:200] or "recording"
    return f'inline; filename="{safe}"'


class ObjectStorage:
    """An ``ObjectStore`` (plus ``PutMedia`` and ``Presign``) over one obstore store."""

    def __init__(
        self,
        store: _Store,
        url: str,
        scratch: Path,
        *,
        writer: _Store | None = None,
    ) -> None:
        self._store = store
        # Puts on a client of their own: completing a large multipart upload may take minutes
        # before the store answers (S3 says so), which a read must not be allowed to.
        self._writer = writer or store
        self.url = url
        # Node-local downloads (``local_copy``), named so the start-up sweep finds those of a
        # killed process (they hold audio).
        self.scratch = scratch
        self._temporary_prefix = scratch_prefix(COPY_KIND, process_id())

    @classmethod
    def from_url(
        cls, url: str, *, endpoint: str | None = None, scratch: Path | None = None
    ) -> ObjectStorage:
        """Build the store for ``s3://``, ``gs://`` or ``az://`` URLs; ``ConfigError`` for a
        URL or credentials obstore cannot use."""
        scheme = url.split("://", 1)[0]
        if scheme not in SCHEMES:
            raise ConfigError("TAPEVAULT_STORAGE_URL", f"unsupported scheme in {url!r}")
        reader = _open(url, scheme, endpoint, READ_TIMEOUT)
        writer = _open(url, scheme, endpoint, WRITE_READ_TIMEOUT)
        return cls(reader, url, scratch or Path(tempfile.gettempdir()), writer=writer)

    # Put, PutMedia ----------------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        return self._put(key, chunks, None)

    def put_media(self, key: str, chunks: Iterable[bytes], media: MediaAttributes) -> ObjectInfo:
        attributes = {
            "Content-Type": media.content_type,
            "Content-Disposition": content_disposition(media.filename),
        }
        return self._put(key, chunks, attributes)

    def _put(
        self, key: str, chunks: Iterable[bytes], attributes: dict[str, str] | None
    ) -> ObjectInfo:
        check_key(key)
        source = _Counted(iter(chunks))
        head = source.take(PART_SIZE)
        try:
            if source.ended:
                obstore.put(self._writer, key, b"".join(head), attributes=attributes)
            else:
                obstore.put(
                    self._writer,
                    key,
                    source.after(head),
                    attributes=attributes,
                    use_multipart=True,
                    chunk_size=PART_SIZE,
                    max_concurrency=PARTS_IN_FLIGHT,
                )
        except Exception as exc:
            if source.failure is not None:
                raise source.failure from None
            if isinstance(exc, ObstoreError | OSError):
                _unavailable(key, exc)
            raise
        return ObjectInfo(size=source.size, mtime=time.time())

    # ListKeys --------------------------------------------------------------------------

    def list_keys(self, prefix: str) -> Iterator[ListedObject]:
        """The objects under a directory-like ``prefix`` (``incoming/``): the orphan sweep."""
        try:
            for batch in obstore.list(self._store, prefix=prefix.rstrip("/")):
                for meta in batch:
                    yield ListedObject(
                        meta["path"],
                        ObjectInfo(meta["size"], meta["last_modified"].timestamp()),
                    )
        except (ObstoreError, OSError) as exc:
            _unavailable(prefix, exc)

    # Stat, Delete -----------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        try:
            meta = obstore.head(self._store, key)
        except FileNotFoundError:
            return None
        except (ObstoreError, OSError) as exc:
            _unavailable(key, exc)
        return ObjectInfo(size=meta["size"], mtime=meta["last_modified"].timestamp())

    def delete(self, key: str) -> bool:
        # The providers answer a delete of nothing with success: ask first, for the answer.
        if self.stat(key) is None:
            return False
        try:
            obstore.delete(self._store, key)
        except FileNotFoundError:
            return False
        except (ObstoreError, OSError) as exc:
            _unavailable(key, exc)
        return True

    # GetRange ---------------------------------------------------------------------------

    async def read_range(
        self, key: str, offset: int, length: int, chunk_size: int = DEFAULT_CHUNK
    ) -> AsyncIterator[bytes]:
        check_key(key)
        if offset < 0 or length < 0:
            raise StorageError(f"invalid range {offset}+{length} of {key!r}")
        if length == 0:
            return  # the providers refuse an empty range; there is nothing to fetch
        try:
            result = await obstore.get_async(
                self._store, key, options={"range": (offset, offset + length)}
            )
        except FileNotFoundError as exc:
            raise StorageError(f"object {key!r} is missing from storage") from exc
        except (ObstoreError, OSError) as exc:
            _unavailable(key, exc)
        stream = result.stream(min_chunk_size=chunk_size)
        try:
            async for buffer in stream:
                data = bytes(buffer)
                if len(data) <= chunk_size:
                    yield data
                    continue
                view = memoryview(data)
                for start in range(0, len(data), chunk_size):
                    yield bytes(view[start : start + chunk_size])
        except (ObstoreError, OSError) as exc:
            # Mid-body: the answer's head is out, so the server drops the connection.
            raise StorageError(f"object {key!r}: the store stopped mid-read: {exc}") from exc

    # LocalCopy --------------------------------------------------------------------------

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """The object downloaded to a node-local temporary file, removed afterwards."""
        check_key(key)
        self.scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(prefix=self._temporary_prefix, dir=self.scratch)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    result = obstore.get(self._store, key)
                    for buffer in result.stream(min_chunk_size=DEFAULT_CHUNK):
                        out.write(buffer)
                except FileNotFoundError as exc:
                    raise StorageError(f"object {key!r} is missing from storage") from exc
                except (ObstoreError, OSError) as exc:
                    _unavailable(key, exc)
            yield Path(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    # Presign ----------------------------------------------------------------------------

    def presign(self, key: str, expires_in_seconds: int) -> str:
        check_key(key)
        seconds = max(1, min(expires_in_seconds, MAX_PRESIGN_SECONDS))
        try:
            return obstore.sign(self._store, "GET", key, timedelta(seconds=seconds))
        except (ObstoreError, OSError) as exc:
            _unavailable(key, exc)


class _Counted:
    """A put's chunks, counted, with the exception they raised kept: obstore reports a failing
    iterator as its own error, and the caller's (a client gone, a body too large) must surface
    as itself."""

    def __init__(self, source: Iterator[bytes]) -> None:
        self._source = source
        self.size = 0
        self.ended = False
        self.failure: BaseException | None = None

    def take(self, limit: int) -> list[bytes]:
        """Chunks until more than ``limit`` bytes are held (``ended`` tells if it ran out)."""
        held: list[bytes] = []
        for chunk in self._source:
            held.append(chunk)
            self.size += len(chunk)
            if self.size > limit:
                return held
        self.ended = True
        return held

    def after(self, head: list[bytes]) -> Iterator[bytes]:
        yield from head
        try:
            for chunk in self._source:
                self.size += len(chunk)
                yield chunk
        except BaseException as exc:
            self.failure = exc
            raise
