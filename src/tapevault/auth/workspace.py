"""Workspace API keys as ``Authorization: Bearer <key>`` (the Amigo dialect and the native API).

Every request looks the key up by its hash: nothing is cached, so a revoked key fails on the very
next request in every process. The answer never says whether a key exists, was revoked or
expired: each is the same "invalid API key".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tapevault.core.apikeys import MAX_KEY_LENGTH, hash_api_key, is_usable
from tapevault.core.clock import Clock, now_ms
from tapevault.core.model import ApiKey, KeyRole, Tenant
from tapevault.errors import AuthError, Forbidden

INVALID_KEY = "Invalid API key."


@dataclass(frozen=True, slots=True)
class KeyCaller:
    tenant: Tenant
    key: ApiKey

    def require(self, role: KeyRole) -> None:
        """Raise ``Forbidden`` unless the key has ``role`` (admin keys may do everything)."""
        if role is KeyRole.ADMIN and self.key.role is not KeyRole.ADMIN:
            raise Forbidden("This API key may not do that; use a key with the admin role.")


class ApiKeyVerifier:
    def __init__(
        self,
        key_lookup: Callable[[str], ApiKey | None],
        tenant_lookup: Callable[[str], Tenant | None],
        clock: Clock,
    ) -> None:
        self._keys = key_lookup
        self._tenants = tenant_lookup
        self._clock = clock

    def verify(self, authorization: str | None) -> KeyCaller:
        if not authorization:
            raise AuthError("Not authenticated: send Authorization: Bearer <api key>.")
        scheme, _, secret = authorization.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret or len(secret) > MAX_KEY_LENGTH:
            raise AuthError("Not authenticated: send Authorization: Bearer <api key>.")
        key = self._keys(hash_api_key(secret))
        if key is None or not is_usable(key, now_ms(self._clock)):
            raise AuthError(INVALID_KEY)
        tenant = self._tenants(key.partner_id)
        if tenant is None:
            raise AuthError(INVALID_KEY)
        return KeyCaller(tenant, key)
