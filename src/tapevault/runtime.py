"""The composition root: settings in, a wired application out. Built once per process."""

from __future__ import annotations

import gc
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
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
from tapevault.core.clock import Clock, OffsetClock, SystemClock, now_ms
from tapevault.core.delivery import DirectLinks
from tapevault.core.handoff import Handoffs
from tapevault.core.ingest import Ingest
from tapevault.core.jobs import Jobs
from tapevault.core.keyring import KeyRing
from tapevault.core.links import Links
from tapevault.core.mediaauth import MediaAuthorisation
from tapevault.core.playback import PerRequest, PlaybackLog, Playbacks
from tapevault.core.ports import NodeLocalFiles, ObjectStore
from tapevault.core.quota import Quotas
from tapevault.core.renditions import Renditions
from tapevault.core.retention import SHARED_WRITER_PACE, Retention
from tapevault.core.servingcache import ServingCache
from tapevault.core.sessions import Sessions
from tapevault.core.tenants import Tenants
from tapevault.core.vault import Vault
from tapevault.core.webhooks import Webhooks
from tapevault.db.auditstore import SqlAuditStore
from tapevault.db.changes import ChangeFeed
from tapevault.db.engine import current_revision, head_revision, make_engine, migrate
from tapevault.db.gauges import job_queue
from tapevault.db.repository import SqlRepository
from tapevault.db.webhookstore import SqlWebhookStore
from tapevault.deliverylog import DeliveryLog
from tapevault.errors import ConfigError, StorageError
from tapevault.http import requestlog
from tapevault.http.app import build_app
from tapevault.http.asgi import ASGIApp
from tapevault.http.context import AppContext
from tapevault.http.forwarded import ProxyHeaders, TrustedProxies
from tapevault.http.playerlinks import service as player_links
from tapevault.http.stream import StreamEndpoint, StreamHub
from tapevault.http.xaccel import Accel
from tapevault.ingest import formats
from tapevault.ingest.finalize import TEMPORARY_KINDS, Finalizer
from tapevault.ingest.housekeeping import Housekeeping
from tapevault.ingest.liveness import is_gone, node_name
from tapevault.ingest.scratch import (
    Spool,
    sweep_stream_spools,
    sweep_temporaries,
    sweep_unrecorded,
)
from tapevault.ingest.tus_store import TusStore
from tapevault.ingest.worker import Worker, worker_id
from tapevault.observe.exposition import DatabaseGauges
from tapevault.observe.metrics import (
    AuditCounter,
    RetentionCounter,
    media_bytes_sent,
    observe_store,
)
from tapevault.readiness import CHECKS, Readiness, probe_dependencies, stat_probe
from tapevault.storage import open_store
from tapevault.storage.local import LocalStore
from tapevault.storage.node_local import NodeLocalDisk
from tapevault.storage.objectstore import COPY_KIND, ObjectStorage
from tapevault.storage.timed import TimedStore, unwrapped
from tapevault.webhooks.dispatch import Dispatcher
from tapevault.webhooks.ssrf import AddressPolicy, CheckAddress

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
    local: NodeLocalDisk  # this node's working files (spools, temporaries)
    changes: ChangeFeed  # other processes' (nodes') changes, heard within a fraction of a second
    deliveries: DeliveryLog | None = None  # nginx's delivery log (TAPEVAULT_ACCEL_REDIRECT)

    def asgi(self, *, background: bool = False) -> ASGIApp:
        """The application; with ``background`` its lifespan starts and stops the worker
        threads (``TAPEVAULT_WORKERS``) and runs crash recovery first."""
        gauges = DatabaseGauges(partial(job_queue, self.repo.engine))
        if not background:
            app = build_app(
                self.context, self.streams, on_shutdown=self.close, database_gauges=gauges
            )
        else:
            app = build_app(
                self.context,
                self.streams,
                on_startup=self.start_background,
                on_shutdown=self.stop,
                database_gauges=gauges,
            )
        proxies = TrustedProxies(self.settings.trusted_proxies)
        return ProxyHeaders(app, proxies) if proxies else app

    def websocket_protocol(self) -> str:
        return websocket_protocol(self.settings)

    def start_background(self) -> None:
        # Everything built so far lives as long as the process: keep the cyclic garbage
        # collector from re-scanning it (its full passes paused the loop ~60 ms under load).
        gc.freeze()
        self.changes.start()
        self.recover()
        if self.deliveries is not None:
            self.deliveries.start()
        if self.settings.workers:
            self.worker.start(self.settings.workers)

    def recover(self) -> None:
        """Take back what a dead process left: job leases, half-written recordings, playbacks
        it was folding (sealed as they were last written) and its scratch files (PHI)."""
        moved = self.local.promote_legacy_uploads()
        if moved:
            log.warning("moved %d accepted upload(s) from DATA_DIR/incoming into the store", moved)
        self.worker.recover()
        self.sweep_scratch()
        if self.audit is not None:
            self.audit.check_witness()  # a contradicted head is told now, not at the next sign
            # A predecessor killed between durable and integrated left records waiting: the
            # integrator (this process, or the one holding the role) takes them now.
            self.audit.start()
            sealed = self.audit.recover_pending(
                partial(is_gone, me=self.context.process_id), stale_ms=PENDING_STALE_MS
            )
            if sealed:
                log.warning("sealed %d playback record(s) left open by a dead process", sealed)

    def sweep_scratch(self) -> int:
        """Remove spooled bodies and temporaries no live process writes, and expired tus
        uploads; at start-up and every few minutes (housekeeping)."""
        return sweep_scratch(self.settings, self.context.spool, self.local, self.vault, self.repo)

    def stop(self) -> None:
        self.worker.stop()
        self.changes.stop()
        if self.deliveries is not None:
            self.deliveries.stop()
        self.close()

    @property
    def engine(self) -> Engine:
        return self.repo.engine

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()
        self.audit_store.close()
        self.repo.close()


def open_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    access_log: AccessLog | None = None,
    run_migrations: bool = True,
    store: ObjectStore | None = None,
) -> Runtime:
    """Connect, migrate (unless told not to) and wire the services for ``settings``; ``store``
    replaces the one ``TAPEVAULT_STORAGE_URL`` names (tests run the services on others)."""
    settings.ensure_data_dir()
    clock = clock or system_clock()
    engine = make_engine(settings.database_url)
    if run_migrations:
        migrate(engine)
    repo = SqlRepository(engine)
    store = store or TimedStore(
        open_store(
            settings.storage_url,
            endpoint=settings.storage_endpoint,
            scratch=settings.data_dir / "scratch" / "store",
        ),
        observe_store,
    )
    # This process on its node: the data directory whose disk holds its streams' spools.
    node = this_node(settings)
    process = worker_id(node)
    local = NodeLocalDisk(settings.data_dir, store, process)
    vault = build_vault(
        repo,
        store,
        clock,
        settings.public_url,
        local,
        default_quota_bytes=settings.tenant_quota_bytes,
    )
    spool = Spool(local.spool_dir, process)
    audit_store = SqlAuditStore(engine)
    audit: AuditLog | None = None
    playbacks: PlaybackLog
    if access_log is None and settings.audit:
        audit = AuditLog(
            audit_store,
            clock,
            load_or_create_signer(settings.audit_key_path),
            checkpoint_seconds=settings.audit_checkpoint_seconds,
            integrate_seconds=settings.audit_integrate_ms / 1000,
            witness=CheckpointJournal(settings.audit_checkpoint_log_path),
            after_answer=frozenset()
            if settings.audit_durable_all
            else frozenset({Action.URLS_ISSUE, Action.CALL_URLS, Action.MERGED_URLS}),
        )
        audit.counts = AuditCounter()
        audit.integrator.counts = audit.counts
        audit.integrator.node = node
        access_log = audit
        playbacks = Playbacks(audit, clock, process, idle_seconds=settings.playback_idle_seconds)
    else:
        access_log = access_log or LoggingAccessLog()
        playbacks = PerRequest(access_log)
    webhook_store = SqlWebhookStore(engine)
    receivers = AddressPolicy.parse(settings.webhook_allow_private)
    webhooks = Webhooks(webhook_store, lambda: now_ms(clock), CheckAddress(receivers))
    renditions = Renditions(vault, repo)
    retention = Retention(vault, repo, access_log, RetentionCounter())
    if engine.dialect.name == "sqlite":
        retention.pace = SHARED_WRITER_PACE
    accel, deliveries = _accel(settings, store, playbacks, clock)
    context = AppContext(
        settings=settings,
        vault=vault,
        calls=Calls(vault, repo),
        player_links=player_links(repo, vault, renditions, settings),
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
        readiness=Readiness(
            probe_dependencies(
                lambda: current_revision(engine), head_revision(), store_probe(store)
            ),
            CHECKS,
        ),
        webhooks=webhooks,
        accel=accel,
        audit_integrator=None if audit is None else audit.integrator,
    )
    worker = Worker(
        Finalizer(vault, repo, formats.decoder(settings.max_recording_seconds), local),
        process,
        housekeeping=Housekeeping(
            retention,
            audit_store,
            clock,
            purge_seconds=settings.purge_interval_seconds,
            audit_retention_seconds=settings.audit_retention_seconds,
            sweep_scratch=lambda: sweep_scratch(settings, spool, local, vault, repo),
            prune_webhooks=webhook_store.prune,
            claim=lambda task, seconds: repo.claim_task(task, process, int(seconds * 1000)),
        ),
        webhooks=Dispatcher(
            webhook_store,
            process,
            receivers,
            timeout_seconds=settings.webhook_timeout_seconds,
            schedule=settings.webhook_retry_schedule,
        ),
        lease_seconds=settings.job_lease_seconds,
        spool_wait_seconds=settings.stream_node_wait_seconds,
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
        local=local,
        changes=ChangeFeed(
            engine, repo.cache_epoch, partial(changed_elsewhere, context, worker.webhooks)
        ),
        deliveries=deliveries,
    )


def build_vault(
    repo: SqlRepository,
    store: ObjectStore,
    clock: Clock,
    media_base_url: str,
    local: NodeLocalFiles,
    *,
    default_quota_bytes: int | None = None,
) -> Vault:
    """The services, each given the narrow part of the repository it needs (see
    ``core/vault.py``); the one place they are wired."""
    cache = ServingCache(repo)
    keys = KeyRing(repo, clock)
    jobs = Jobs(clock, store)
    quotas = Quotas(repo, default_quota_bytes)
    sessions = Sessions(repo, clock, jobs)
    direct = DirectLinks(store)
    return Vault(
        tenants=Tenants(repo, clock),
        quotas=quotas,
        sessions=sessions,
        ingest=Ingest(repo, store, clock, local, sessions, quotas, jobs),
        jobs=jobs,
        keys=keys,
        links=Links(keys, cache, clock, store, media_base_url, direct),
        media=MediaAuthorisation(repo, cache, keys, clock),
        cache=cache,
        direct=direct,
        store=store,
        clock=clock,
        local=local,
    )


def this_node(settings: Settings) -> str:
    """The node of this data directory; a damaged or unwritable ``node-id`` stops the start
    with one line naming it (not a traceback)."""
    try:
        return node_name(settings.data_dir)
    except (OSError, ValueError) as exc:
        raise ConfigError("TAPEVAULT_DATA_DIR", f"its node name: {exc}") from exc


def changed_elsewhere(context: AppContext, webhooks: Dispatcher | None = None) -> None:
    """What the change feed does when any process changed what may be served: every cache of
    this process that could still say yes is dropped, and the signing keys re-read; an idle
    webhook dispatcher looks again for endpoints (adding one moves the epoch too)."""
    context.vault.cache.reload()
    context.vault.keys.reload()
    context.suki_tokens.forget()
    context.kore_tokens.forget()
    if webhooks is not None:
        webhooks.wake()


def _accel(
    settings: Settings, store: ObjectStore, playbacks: PlaybackLog, clock: Clock
) -> tuple[Accel | None, DeliveryLog | None]:
    """nginx's share of media delivery (``TAPEVAULT_ACCEL_REDIRECT``): the hand-offs and the
    reader of nginx's reports. The delivery log is read once the server starts
    (``start_background``); until then, and whenever it cannot be read, nothing is handed off."""
    if settings.accel_redirect is None or settings.accel_log is None:
        return None, None
    backend = unwrapped(store)
    if not isinstance(backend, LocalStore):
        raise ConfigError(
            "TAPEVAULT_ACCEL_REDIRECT", "nginx can send only files of the local store"
        )
    handoffs = Handoffs(playbacks, on_sent=media_bytes_sent.inc)
    deliveries = DeliveryLog(settings.accel_log, handoffs, lambda: now_ms(clock))
    accel = Accel(
        settings.accel_redirect,
        backend.path_for,
        handoffs,
        lambda: deliveries.ready,
        settings.accel_authz_seconds,
    )
    return accel, deliveries


def store_probe(store: ObjectStore) -> Callable[[], None]:
    """How /readyz asks the store whether it answers. A stat of a missing key answers "no such
    object" even when a local store's directory is gone (an unmounted disk), so for the local
    store its root must be there too."""
    stat = stat_probe(store)

    def probe() -> None:
        stat()
        backend = unwrapped(store)
        if isinstance(backend, LocalStore) and not backend.root.is_dir():
            raise StorageError(f"the store's directory {backend.root} is missing")

    return probe


def sweep_scratch(
    settings: Settings, spool: Spool, local: NodeLocalDisk, vault: Vault, repo: SqlRepository
) -> int:
    """One sweep of every scratch area (see ``tapevault.ingest.scratch``) and of incoming
    objects no recording names; logs what went."""
    owner = local.owner
    removed = spool.sweep()
    removed += sweep_temporaries(local.scratch_dirs(), TEMPORARY_KINDS, owner)
    removed += sweep_unrecorded(vault.store, repo.get_recording)
    removed += sweep_stream_spools(local.stream_spools(), repo.get_recording)
    backend = unwrapped(vault.store)
    if isinstance(backend, LocalStore):
        removed += sweep_temporaries([backend.staging], ("put",), owner)
    elif isinstance(backend, ObjectStorage):
        removed += sweep_temporaries([backend.scratch], (COPY_KIND,), owner)
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
    settings = Settings.load()
    if settings.request_log:
        requestlog.to_stderr()  # a spawned process: the parent's logging set-up is not ours
    return open_runtime(settings, run_migrations=False).asgi(background=True)


def server_options(settings: Settings, log_level: str) -> dict[str, Any]:
    """uvicorn's options for ``serve`` and ``demo``: tapevault's own protocols (limits on
    header size, read timeouts, pings), the keep-alive timeout, and the shutdown grace.
    uvicorn's own proxy headers are off (its default trusts loopback): ``Runtime.asgi`` applies
    ``TAPEVAULT_TRUSTED_PROXIES`` itself (``tapevault.http.forwarded``), as the live streams'
    direct path does."""
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
        "proxy_headers": False,
        # SIGTERM: uvicorn stops accepting at once, lets responses in flight finish (a
        # kept-alive connection is closed after its current response) and cancels what is
        # left after the grace; live streams get their final ack and 1012 at once.
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
    }


def websocket_protocol(settings: Settings) -> str:
    """uvicorn's ``ws=`` for this application: live streams skip ASGI after the handshake
    (``tapevault.http.wsserver``), unless ``TAPEVAULT_DIRECT_STREAMS=off``. An import string,
    so that worker processes import the class themselves."""
    if not settings.direct_streams:
        return "tapevault.http.wsserver:GuardedWebSocketsProtocol"
    return "tapevault.http.wsserver:DirectStreamsProtocol"
