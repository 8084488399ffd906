"""The key ring: the keys that sign and verify every URL tapevault hands out.

Keys live in the database; ``tapevault keys`` rotates and removes them from another process.
Every process re-reads them at most ``reload_seconds`` apart, so a removal revokes its URLs
everywhere within that period, and a rotation switches every process to the new signing key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Protocol

from tapevault.core.clock import Clock, now_ms
from tapevault.core.model import SigningKey
from tapevault.core.signing import UrlSigner, new_signing_key
from tapevault.errors import Conflict

RELOAD_SECONDS = 1.0


class KeyRepository(Protocol):
    def list_signing_keys(self) -> Sequence[SigningKey]: ...

    def add_signing_key(self, key: SigningKey) -> None: ...

    def remove_signing_key(self, key_id: str) -> bool: ...


class KeyRing:
    def __init__(
        self, repo: KeyRepository, clock: Clock, *, reload_seconds: float = RELOAD_SECONDS
    ) -> None:
        self.repo = repo
        self.clock = clock
        self.reload_seconds = reload_seconds
        self._lock = threading.Lock()
        self._signer = self._load(None)
        self._loaded = time.monotonic()

    def _load(self, current: UrlSigner | None) -> UrlSigner:
        """The signer for the keys in the database: the current one while they are unchanged,
        so its verified-signature cache (and the URL memo of ``core.links``, keyed by it)
        outlive the periodic re-read."""
        keys = self.repo.list_signing_keys()
        if not keys:
            self.repo.add_signing_key(new_signing_key(None, now_ms(self.clock)))
            keys = self.repo.list_signing_keys()
        if current is not None and current.keys == tuple(keys):
            return current
        return UrlSigner(keys)

    def signer(self) -> UrlSigner:
        """The signer, re-read from the database at most ``reload_seconds`` apart."""
        now = time.monotonic()
        if now - self._loaded >= self.reload_seconds:
            with self._lock:
                if now - self._loaded >= self.reload_seconds:
                    self._signer = self._load(self._signer)
                    self._loaded = time.monotonic()
        return self._signer

    def reload(self) -> None:
        """Re-read the keys now (the change feed heard that another process changed what may
        be served), not at the next periodic re-read."""
        with self._lock:
            self._signer = self._load(self._signer)
            self._loaded = time.monotonic()

    def rotate_signing_key(self) -> str:
        # The newest key signs; make "newest" unambiguous even within one millisecond.
        newest = max((k.created_ms for k in self.repo.list_signing_keys()), default=0)
        key = new_signing_key(None, max(now_ms(self.clock), newest + 1))
        self.repo.add_signing_key(key)
        self._signer = self._load(self._signer)
        return key.key_id

    def remove_signing_key(self, key_id: str) -> bool:
        keys = self.repo.list_signing_keys()
        if len(keys) == 1 and keys[0].key_id == key_id:
            raise Conflict("Refusing to remove the only signing key; rotate first.")
        removed = self.repo.remove_signing_key(key_id)
        self._signer = self._load(self._signer)
        return removed

    def signing_key_ids(self) -> list[str]:
        return [k.key_id for k in self.repo.list_signing_keys()]
