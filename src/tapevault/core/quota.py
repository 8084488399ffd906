"""Per-tenant storage quotas: how much stored audio a tenant may keep.

A tenant's quota is its own setting (``tapevault tenant set --quota 50GiB``), or the server's
default (``TAPEVAULT_TENANT_QUOTA``, unlimited unless set); 0 is unlimited, as in filesystem
quotas. What counts is the size of its available recordings (stored, canonical WAV, merged
renditions included). It is checked where bytes are taken on: an upload before its 202 (against
the body's size), a live stream when it opens, and again in the worker while an upload decodes
(against the decoded size), so a bomb that passed the first check still stops at the quota. The
quota is soft by what concurrent uploads add between two checks.
"""

from __future__ import annotations

from typing import Protocol

from tapevault.core.model import Tenant
from tapevault.errors import QuotaExceeded

UNLIMITED = 0


class QuotaRepository(Protocol):
    def stored_bytes(self, partner_id: str) -> int: ...
    def get_tenant(self, partner_id: str) -> Tenant | None: ...


class Quotas:
    def __init__(self, repo: QuotaRepository, default_bytes: int | None) -> None:
        self.repo = repo
        self.default_bytes = default_bytes

    def limit(self, tenant: Tenant) -> int | None:
        """The tenant's quota in bytes, or None when it has none."""
        quota = tenant.storage_quota_bytes
        if quota is None:
            quota = self.default_bytes
        return None if quota in (None, UNLIMITED) else quota

    def room(self, tenant: Tenant) -> tuple[int, int] | None:
        """(quota, bytes stored now), or None when the tenant has no quota. The quota is read
        afresh (dialects cache tenants for seconds): a change applies to the next upload."""
        quota = self.limit(self.repo.get_tenant(tenant.partner_id) or tenant)
        if quota is None:
            return None
        return quota, self.repo.stored_bytes(tenant.partner_id)

    def check(self, tenant: Tenant, adding: int) -> None:
        """Raise ``QuotaExceeded`` unless ``adding`` more bytes fit in the tenant's quota."""
        room = self.room(tenant)
        if room is not None and room[1] + adding > room[0]:
            raise QuotaExceeded(room[0], room[1], adding)
