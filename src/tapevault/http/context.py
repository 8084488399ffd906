"""What every HTTP handler is given: the services, built once at start-up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread

from tapevault import inline
from tapevault.auth.kore import KoreTokenVerifier
from tapevault.auth.suki import SukiTokenVerifier
from tapevault.auth.workspace import ApiKeyVerifier
from tapevault.config import Settings
from tapevault.core.access import AccessLog
from tapevault.core.auditlog import AuditStore as AuditReader
from tapevault.core.calls import Calls
from tapevault.core.integrator import Integrator
from tapevault.core.playback import PlaybackLog
from tapevault.core.playerlinks import PlayerLinks
from tapevault.core.renditions import Renditions
from tapevault.core.retention import Retention
from tapevault.core.vault import Vault
from tapevault.core.webhooks import Webhooks
from tapevault.http.xaccel import Accel
from tapevault.ingest.scratch import Spool
from tapevault.readiness import Readiness

T = TypeVar("T")

# The longest an audit read waits for the integrator (it integrates every 250 ms by default);
# past it the page shows what is integrated so far.
AUDIT_SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    vault: Vault
    calls: Calls
    player_links: PlayerLinks
    renditions: Renditions
    retention: Retention
    audit_store: AuditReader
    suki_tokens: SukiTokenVerifier
    kore_tokens: KoreTokenVerifier
    api_keys: ApiKeyVerifier
    access_log: AccessLog
    playbacks: PlaybackLog
    spool: Spool  # where upload bodies wait for their check (ingest/scratch.py)
    # SQLite answers point lookups in microseconds, less than a thread hop costs (see
    # shared/notes/performance.md), so small metadata calls run on the loop there; PostgreSQL
    # calls cross the network and go to a worker thread.
    inline_metadata: bool
    # Identifies this process as the writer of its live streams (see ingest/worker.worker_id).
    process_id: str
    readiness: Readiness  # GET /readyz: database, schema and store (tapevault/readiness.py)
    webhooks: Webhooks  # the tenants' webhook endpoints (core/webhooks.py)
    # TAPEVAULT_ACCEL_REDIRECT: nginx sends the bytes of validated media GETs (http/xaccel.py)
    accel: Accel | None = None
    # The access log's integrator (None without the durable log): audit reads wait (bounded)
    # for what is durable to be integrated, so a caller reads its own and others' records.
    audit_integrator: Integrator | None = None

    async def settled_audit(self) -> None:
        if self.audit_integrator is not None:
            await self.blocking(self.audit_integrator.settle, AUDIT_SETTLE_SECONDS)

    async def metadata(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a short metadata call: inline on SQLite, in a thread on PostgreSQL."""
        if self.inline_metadata:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args)

    async def hot(self, fn: Callable[..., T], *args: Any) -> T:
        """A read-only metadata call on the hot path: on PostgreSQL tried on the loop first,
        answered there when memory holds the answer (``tapevault.inline``), else run again in a
        thread; inline on SQLite, as ``metadata``."""
        if self.inline_metadata:
            return fn(*args)
        try:
            with inline.database_free():
                return fn(*args)
        except inline.NeedsDatabase:
            pass
        return await anyio.to_thread.run_sync(fn, *args)

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run file-heavy work (decode, copy, fsync) in a thread, whatever the database."""
        return await anyio.to_thread.run_sync(fn, *args)
