"""Workspace API keys: made once, shown once, kept only as a SHA-256.

A key is 256 random bits behind a recognisable prefix (``tvk_``), so a fast hash is enough: no
password-style stretching is needed when the secret cannot be guessed. The stored prefix lets an
operator tell keys apart in a list without ever seeing one again.
"""

from __future__ import annotations

import hashlib
import secrets

from tapevault.core.model import ApiKey, KeyRole

KEY_PREFIX = "tvk_"
_SHOWN_PREFIX = 12  # "tvk_" and 8 characters of the secret
MAX_KEY_LENGTH = 200


def hash_api_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key(
    partner_id: str,
    *,
    name: str,
    role: KeyRole,
    now_ms: int,
    expires_ms: int | None = None,
) -> tuple[ApiKey, str]:
    """A new key for the tenant: (what is stored, the secret to show once)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        key_id=secrets.token_hex(8),
        partner_id=partner_id,
        prefix=secret[:_SHOWN_PREFIX],
        key_hash=hash_api_key(secret),
        name=name,
        role=role,
        created_ms=now_ms,
        expires_ms=expires_ms,
    )
    return key, secret


def is_usable(key: ApiKey, now_ms: int) -> bool:
    """Not revoked and not past its expiry (a revoked key fails from the next request on)."""
    if key.revoked_ms is not None:
        return False
    return key.expires_ms is None or now_ms < key.expires_ms
