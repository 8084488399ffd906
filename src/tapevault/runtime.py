"""The composition root: settings in, a wired application out. Built once per process."""

from __future__ import annotations

import gc
import logging
import math
import os
from dataclasses import dataclass

from sqlalchemy import Engine

from tapevault.auth.kore import KoreTokenVerifier
from tapevault.auth.suki import SukiTokenVerifier
from tapevault.auth.workspace import ApiKeyVerifier
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
from tapevault.ingest.finalize import Finalizer
from tapevault.ingest.housekeeping import Housekeeping
from tapevault.ingest.liveness import is_gone
from tapevault.ingest.worker import Worker, worker_id
from tapevault.storage.local import open_store

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
        """Take back what a dead process left: job leases, half-written recordings, and
        playbacks it was folding (sealed as they were last written)."""
        self.worker.recover()
        if self.audit is not None:
            sealed = self.audit.recover_pending(is_gone, stale_ms=PENDING_STALE_MS)
            if sealed:
                log.warning("sealed %d playback record(s) left open by a dead process", sealed)

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
    store = open_store(settings.storage_url)
    vault = Vault(repo, store, clock, settings.public_url, settings.data_dir)
    process = worker_id()
    spool = settings.data_dir / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    audit_store = SqlAuditStore(engine)
    audit: AuditLog | None = None
    playbacks: PlaybackLog
    if access_log is None and settings.audit:
        audit = AuditLog(
            audit_store,
            clock,
            load_or_create_signer(settings.audit_key_path),
            checkpoint_seconds=settings.audit_checkpoint_seconds,
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
        spool_dir=spool,
        inline_metadata=settings.is_sqlite,
        process_id=process,
    )
    worker = Worker(
        Finalizer(vault, formats.decode, renditions),
        process,
        housekeeping=Housekeeping(
            retention,
            audit_store,
            clock,
            purge_seconds=settings.purge_interval_seconds,
            audit_retention_seconds=settings.audit_retention_seconds,
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


def websocket_protocol(settings: Settings) -> str:
    """uvicorn's ``ws=`` for this application: live streams skip ASGI after the handshake
    (``tapevault.http.wsserver``), unless ``TAPEVAULT_DIRECT_STREAMS=off``. An import string,
    so that worker processes import the class themselves."""
    if not settings.direct_streams:
        return "websockets-sansio"
    return "tapevault.http.wsserver:DirectStreamsProtocol"
