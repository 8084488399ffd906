"""The composition root: settings in, a wired application out. Built once per process."""

from __future__ import annotations

import gc
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from tapevault.auth.kore import KoreTokenVerifier
from tapevault.auth.suki import SukiTokenVerifier
from tapevault.auth.workspace import ApiKeyVerifier
from tapevault.checkpointlog import CheckpointJournal
from tapevault.config import Settings
from tapevault.core.access import AccessLog, Action, LoggingAccessLog
from tapevault.core.auditlog import AuditLog
from tapevault.core.calls import Calls
from tapevault.core.checkpoints import load_or_create_signer
from tapevault.core.clock import Clock, OffsetClock, SystemClock
from tapevault.core.playback import PerRequest, PlaybackLog, Playbacks
from tapevault.core.renditions import Renditions
from tapevault.core.retention import Retention
from tapevault.core.vault import Vault
from tapevault.db.auditstore import SqlAuditStore
from tapevault.db.engine import make_engine, migrate
from tapevault.db.repository import SqlRepository
from tapevault.errors import ConfigError
from tapevault.http.app import build_app
from tapevault.http.asgi import ASGIApp
from tapevault.http.context import AppContext
from tapevault.http.stream import StreamEndpoint, StreamHub
from tapevault.ingest import formats
from tapevault.ingest.finalize import TEMPORARY_KINDS, Finalizer
from tapevault.ingest.housekeeping import Housekeeping
from tapevault.ingest.liveness import is_gone
from tapevault.ingest.scratch import Spool, sweep_temporaries, sweep_unrecorded
from tapevault.ingest.tus_store import TusStore
from tapevault.ingest.worker import Worker, worker_id
from tapevault.storage import open_store
from tapevault.storage.local import LocalStore
from tapevault.storage.objectstore import COPY_KIND, ObjectStorage

log = logging.getLogger("tapevault")

# Testing knob, not a setting: shift this process's clock by so many seconds (two servers on one
# database whose clocks disagree). Never set it in production.
CLOCK_OFFSET_VARIABLE = "TAPEVAULT_CLOCK_OFFSET_SECONDS"

# A playback not refreshed for this long belongs to a process on another host that is gone.
PENDING_STALE_MS = 10 * 60 * 1000


@dataclass
class Runtime:
    settings: Settings
    repo: SqlRepository
    vault: Vault
    context: AppContext
    worker: Worker
    audit: AuditLog | None  # the durable access log (None with TAPEVAULT_AUDIT=off or in tests)
    audit_store: SqlAuditStore
    streams: StreamEndpoint  # live streams: the ASGI route and the fast path share it

    def asgi(self, *, background: bool = False) -> ASGIApp:
        """The application; with ``background`` its lifespan starts and stops the worker
        threads (``TAPEVAULT_WORKERS``) and runs crash recovery first."""
        if not background:
            return build_app(self.context, self.streams, on_shutdown=self.close)
        return build_app(
            self.context, self.streams, on_startup=self.start_background, on_shutdown=self.stop
        )

    def websocket_protocol(self) -> str:
        return websocket_protocol(self.settings)

    def start_background(self) -> None:
        # Everything built so far lives as long as the process: keep the cyclic garbage
        # collector from re-scanning it (its full passes paused the loop ~60 ms under load).
        gc.freeze()
        self.recover()
        if self.settings.workers:
            self.worker.start(self.settings.workers)

    def recover(self) -> None:
        """Take back what a dead process left: job leases, half-written recordings, playbacks
        it was folding (sealed as they were last written) and its scratch files (PHI)."""
        self.worker.recover()
        self.sweep_scratch()
        if self.audit is not None:
            self.audit.check_witness()  # a contradicted head is told now, not at the next sign
            sealed = self.audit.recover_pending(is_gone, stale_ms=PENDING_STALE_MS)
            if sealed:
                log.warning("sealed %d playback record(s) left open by a dead process", sealed)

    def sweep_scratch(self) -> int:
        """Remove spooled bodies and temporaries no live process writes, and expired tus
        uploads; at start-up and every few minutes (housekeeping)."""
        return sweep_scratch(self.settings, self.context.spool, self.worker.owner, self.vault)

    def stop(self) -> None:
        self.worker.stop()
        self.close()

    @property
    def engine(self) -> Engine:
        return self.repo.engine

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()
        self.repo.close()


def open_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    access_log: AccessLog | None = None,
    run_migrations: bool = True,
) -> Runtime:
    """Connect, migrate (unless told not to) and wire the services for ``settings``."""
    settings.ensure_data_dir()
    clock = clock or system_clock()
    engine = make_engine(settings.database_url)
    if run_migrations:
        migrate(engine)
    repo = SqlRepository(engine)
    store = open_store(
        settings.storage_url,
        endpoint=settings.storage_endpoint,
        scratch=settings.data_dir / "scratch" / "store",
    )
    vault = Vault(
        repo,
        store,
        clock,
        settings.public_url,
        settings.data_dir,
        default_quota_bytes=settings.tenant_quota_bytes,
    )
    process = worker_id()
    spool = Spool(settings.data_dir / "spool", process)
    audit_store = SqlAuditStore(engine)
    audit: AuditLog | None = None
    playbacks: PlaybackLog
    if access_log is None and settings.audit:
        audit = AuditLog(
            audit_store,
            clock,
            load_or_create_signer(settings.audit_key_path),
            checkpoint_seconds=settings.audit_checkpoint_seconds,
            witness=CheckpointJournal(settings.audit_checkpoint_log_path),
            after_answer=frozenset()
            if settings.audit_durable_all
            else frozenset({Action.URLS_ISSUE, Action.CALL_URLS, Action.MERGED_URLS}),
        )
        access_log = audit
        playbacks = Playbacks(audit, clock, process, idle_seconds=settings.playback_idle_seconds)
    else:
        access_log = access_log or LoggingAccessLog()
        playbacks = PerRequest(access_log)
    renditions = Renditions(vault)
    retention = Retention(vault, access_log)
    context = AppContext(
        settings=settings,
        vault=vault,
        calls=Calls(vault),
        renditions=renditions,
        retention=retention,
        audit_store=audit_store,
        suki_tokens=SukiTokenVerifier(repo.get_tenant, clock),
        kore_tokens=KoreTokenVerifier(repo.get_tenant_by_kore_client, clock),
        api_keys=ApiKeyVerifier(repo.get_api_key_by_hash, repo.get_tenant, clock),
        access_log=access_log,
        playbacks=playbacks,
        spool=spool,
        inline_metadata=settings.is_sqlite,
        process_id=process,
    )
    worker = Worker(
        Finalizer(vault, formats.decoder(settings.max_recording_seconds), process),
        process,
        housekeeping=Housekeeping(
            retention,
            audit_store,
            clock,
            purge_seconds=settings.purge_interval_seconds,
            audit_retention_seconds=settings.audit_retention_seconds,
            sweep_scratch=lambda: sweep_scratch(settings, spool, process, vault),
        ),
    )
    return Runtime(
        settings=settings,
        repo=repo,
        vault=vault,
        context=context,
        worker=worker,
        audit=audit,
        audit_store=audit_store,
        streams=StreamEndpoint(context, StreamHub(context)),
    )


def sweep_scratch(settings: Settings, spool: Spool, owner: str, vault: Vault) -> int:
    """One sweep of every scratch area (see ``tapevault.ingest.scratch``); logs what went."""
    work = vault.work_dir
    removed = spool.sweep()
    removed += sweep_temporaries(
        [work, work / "incoming", work / "streams"], TEMPORARY_KINDS, owner
    )
    removed += sweep_unrecorded(work / "incoming", vault.repo.get_recording)
    if isinstance(vault.store, LocalStore):
        removed += sweep_temporaries([vault.store.staging], ("put",), owner)
    elif isinstance(vault.store, ObjectStorage):
        removed += sweep_temporaries([vault.store.scratch], (COPY_KIND,), owner)
    tus = TusStore(settings.data_dir / "tus", max_size=settings.max_upload_bytes, clock=vault.clock)
    expired = len(tus.expire(vault.clock.now()))
    if removed or expired:
        log.warning(
            "removed %d scratch file(s) left by stopped processes and %d expired upload(s)",
            removed,
            expired,
        )
    return removed + expired


def system_clock() -> Clock:
    """The wall clock, unless the testing knob ``TAPEVAULT_CLOCK_OFFSET_SECONDS`` shifts it."""
    text = os.environ.get(CLOCK_OFFSET_VARIABLE, "").strip()
    if not text:
        return SystemClock()
    try:
        offset = float(text)
    except ValueError:
        raise ConfigError(CLOCK_OFFSET_VARIABLE, f"{text!r} is not a number of seconds") from None
    if not math.isfinite(offset):
        raise ConfigError(CLOCK_OFFSET_VARIABLE, f"{text!r} is not a number of seconds")
    log.warning(
        "%s=%s: this process's clock is shifted (a testing knob)", CLOCK_OFFSET_VARIABLE, text
    )
    return OffsetClock(offset)


def app_from_environment() -> ASGIApp:
    """The application of one of several server processes (``TAPEVAULT_PROCESSES``): settings
    from the environment, migrations already applied by the parent."""
    return open_runtime(Settings.load(), run_migrations=False).asgi(background=True)


def server_options(settings: Settings, log_level: str) -> dict[str, Any]:
    """uvicorn's options for ``serve`` and ``demo``: tapevault's own protocols (limits on
    header size, read timeouts, pings), the keep-alive timeout, and ``X-Forwarded-For``
    believed only from ``TAPEVAULT_TRUSTED_PROXIES`` (uvicorn's default trusts loopback)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "http": "tapevault.http.httpserver:GuardedHttpProtocol",
        "loop": "uvloop",
        "ws": websocket_protocol(settings),
        "ws_per_message_deflate": False,
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "log_level": log_level,
        "timeout_keep_alive": settings.keepalive_timeout_seconds,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies),
    }


def websocket_protocol(settings: Settings) -> str:
    """uvicorn's ``ws=`` for this application: live streams skip ASGI after the handshake
    (``tapevault.http.wsserver``), unless ``TAPEVAULT_DIRECT_STREAMS=off``. An import string,
    so that worker processes import the class themselves."""
    if not settings.direct_streams:
        return "tapevault.http.wsserver:GuardedWebSocketsProtocol"
    return "tapevault.http.wsserver:DirectStreamsProtocol"
