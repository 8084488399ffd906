"""Where audio bytes live: ``open_store`` builds the store a storage URL names.

``file:///PATH`` is a local directory (``storage.local``); ``s3://``, ``gs://`` and ``az://``
are object stores through obstore (``storage.objectstore``, imported only when used); the
in-memory store (``storage.memory``) is for tests. Every store checks keys with
``storage.keys.check_key`` and passes the contract suite in ``tests/test_store_contract.py``.
"""

from __future__ import annotations

from pathlib import Path

from tapevault.core.ports import ObjectStore
from tapevault.errors import ConfigError

OBJECT_STORE_SCHEMES = ("s3", "gs", "az")


def open_store(
    storage_url: str, *, endpoint: str | None = None, scratch: Path | None = None
) -> ObjectStore:
    """The store ``storage_url`` names. ``endpoint`` overrides the object store's endpoint (an
    S3-compatible server, an emulator); ``scratch`` is the node-local directory for temporary
    downloads. Raises ``ConfigError`` for a URL no store takes."""
    scheme = storage_url.split("://", 1)[0] if "://" in storage_url else ""
    if scheme == "file":
        from tapevault.storage.local import LocalStore

        return LocalStore(Path(storage_url.removeprefix("file://")))
    if scheme in OBJECT_STORE_SCHEMES:
        from tapevault.storage.objectstore import ObjectStorage

        return ObjectStorage.from_url(storage_url, endpoint=endpoint, scratch=scratch)
    raise ConfigError(
        "TAPEVAULT_STORAGE_URL",
        f"unsupported storage {storage_url!r}: use file:///PATH, s3://BUCKET/PREFIX, "
        "gs://BUCKET/PREFIX or az://CONTAINER/PREFIX",
    )
