"""Tenants and their credentials: creation, workspace API keys, settings.

A tenant is created with one credential of every dialect (see ``Tenant``) and a first API key
with the admin role; more keys are issued and revoked through the API or the CLI. Keys of one
tenant are invisible to every other: each call names the tenant it acts for.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tapevault.core import policy
from tapevault.core.apikeys import new_api_key
from tapevault.core.clock import Clock, now_ms
from tapevault.core.model import ApiKey, Delivery, KeyRole, Tenant
from tapevault.errors import InvalidRequest, NotFound

MAX_NAME = 200
MAX_KEY_DAYS = 3650


class TenantRepository(Protocol):
    def get_tenant(self, partner_id: str) -> Tenant | None: ...
    def create_tenant(self, tenant: Tenant) -> None: ...
    def add_api_key(self, key: ApiKey) -> None: ...
    def list_api_keys(self, partner_id: str) -> Sequence[ApiKey]: ...
    def revoke_api_key(self, partner_id: str, key_id: str, now_ms: int) -> bool: ...
    def set_kore_client_secret(self, partner_id: str, secret: str) -> None: ...
    def set_storage_quota(self, partner_id: str, quota_bytes: int | None) -> None: ...
    def set_delivery(self, partner_id: str, delivery: Delivery) -> None: ...
    def set_recording_enabled(self, partner_id: str, enabled: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class NewTenant:
    tenant: Tenant
    api_key: str  # the first (admin) key, shown once


class Tenants:
    def __init__(self, repo: TenantRepository, clock: Clock) -> None:
        self.repo = repo
        self.clock = clock

    def create(
        self, name: str, retention_seconds: int, *, suki_public_keys: str | None = None
    ) -> NewTenant:
        policy.check_retention(retention_seconds)
        tenant = Tenant(
            partner_id=uuid.uuid4().hex,
            name=name[:MAX_NAME],
            jwt_secret=secrets.token_urlsafe(32),
            retention_seconds=retention_seconds,
            created_ms=now_ms(self.clock),
            suki_public_keys=suki_public_keys,
        )
        self.repo.create_tenant(tenant)
        _, secret = self.issue_key(tenant, name="initial admin key", role=KeyRole.ADMIN)
        return NewTenant(tenant, secret)

    def get_tenant(self, partner_id: str) -> Tenant | None:
        """The tenant as stored now (never cached: a changed setting applies at once)."""
        return self.repo.get_tenant(partner_id)

    def issue_key(
        self,
        tenant: Tenant,
        *,
        name: str,
        role: KeyRole,
        expires_in_days: int | None = None,
    ) -> tuple[ApiKey, str]:
        if not isinstance(name, str) or len(name) > MAX_NAME or "\x00" in name:
            raise InvalidRequest(f"name must be text of at most {MAX_NAME} characters")
        now = now_ms(self.clock)
        expires = None
        if expires_in_days is not None:
            if not 1 <= expires_in_days <= MAX_KEY_DAYS:
                raise InvalidRequest(f"expires_in_days must be from 1 to {MAX_KEY_DAYS}")
            expires = now + expires_in_days * 86_400_000
        key, secret = new_api_key(
            tenant.partner_id, name=name, role=role, now_ms=now, expires_ms=expires
        )
        self.repo.add_api_key(key)
        return key, secret

    def keys(self, tenant: Tenant) -> Sequence[ApiKey]:
        return self.repo.list_api_keys(tenant.partner_id)

    def revoke_key(self, tenant: Tenant, key_id: str) -> ApiKey:
        """Revoke one of the tenant's keys; another tenant's key id is simply unknown."""
        if "\x00" in key_id or not self.repo.revoke_api_key(
            tenant.partner_id, key_id[:32], now_ms(self.clock)
        ):
            raise NotFound("API key not found.")
        for key in self.repo.list_api_keys(tenant.partner_id):
            if key.key_id == key_id:
                return key
        raise NotFound("API key not found.")  # pragma: no cover - revoked a moment ago

    def rotate_kore_secret(self, tenant: Tenant) -> str:
        """A new Kore client secret; tokens signed with the old one stop verifying (within the
        verifiers' few-second cache)."""
        secret = secrets.token_urlsafe(32)
        self.repo.set_kore_client_secret(tenant.partner_id, secret)
        return secret

    def set_quota(self, tenant: Tenant, quota_bytes: int | None) -> None:
        """The tenant's storage quota: bytes, ``UNLIMITED`` (0), or None for the server's."""
        if quota_bytes is not None and quota_bytes < 0:
            raise InvalidRequest("a storage quota cannot be negative")
        self.repo.set_storage_quota(tenant.partner_id, quota_bytes)

    def set_delivery(self, tenant: Tenant, delivery: Delivery, *, store_presigns: bool) -> None:
        """Gateway or direct delivery (``core.delivery``); direct needs a store that signs its
        own URLs, so on a local directory it is refused, saying so."""
        if delivery is Delivery.DIRECT and not store_presigns:
            raise InvalidRequest(
                "direct delivery needs an object store that presigns URLs (s3://, gs://, az:// "
                "in TAPEVAULT_STORAGE_URL); this server stores audio in a local directory, so "
                "its recordings can only be served through the gateway"
            )
        self.repo.set_delivery(tenant.partner_id, delivery)

    def set_recording_enabled(self, tenant: Tenant, enabled: bool) -> None:
        self.repo.set_recording_enabled(tenant.partner_id, enabled)
