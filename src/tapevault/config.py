"""Settings: one frozen object built from command-line flags and ``TAPEVAULT_*`` variables.

Every command reads the same names; a flag beats the environment, the environment beats the
default. Anything invalid fails at start-up with a ``ConfigError`` that names the setting, so a
typo never turns into a half-working server. Secrets in URLs are masked in ``repr``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tapevault.core.policy import parse_duration
from tapevault.core.webhooks import RETRY_SCHEDULE_SECONDS
from tapevault.errors import ConfigError, InvalidRequest
from tapevault.numbers import is_digits
from tapevault.webhooks.ssrf import AddressPolicy

_SIZE = re.compile(r"^\s*(\d{1,15})\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_ZERO = re.compile(r"\s*0+\s*[smhdy]?\s*")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

# name -> (environment variable, description); the CLI builds its flags from this table too.
SETTINGS_DOC: dict[str, tuple[str, str]] = {
    "data_dir": ("TAPEVAULT_DATA_DIR", "directory for the SQLite database and audio files"),
    "database_url": (
        "TAPEVAULT_DATABASE_URL",
        "sqlite:///PATH or postgresql://user@host/db (default: SQLite in the data directory)",
    ),
    "public_url": (
        "TAPEVAULT_PUBLIC_URL",
        "base URL written into signed URLs, e.g. https://audio.example.org",
    ),
    "storage_url": (
        "TAPEVAULT_STORAGE_URL",
        "where audio lives: file:///PATH (default: DATA_DIR/audio), s3://BUCKET/PREFIX, "
        "gs://BUCKET/PREFIX or az://CONTAINER/PREFIX (credentials from AWS_*, GOOGLE_*, "
        "AZURE_STORAGE_*)",
    ),
    "storage_endpoint": (
        "TAPEVAULT_STORAGE_ENDPOINT",
        "the object store's endpoint, for S3-compatible servers (MinIO, Ceph, R2) and emulators, "
        "e.g. https://minio.internal:9000; an http:// endpoint allows plain HTTP",
    ),
    "host": ("TAPEVAULT_HOST", "address to listen on"),
    "port": ("TAPEVAULT_PORT", "port to listen on"),
    "max_upload_bytes": ("TAPEVAULT_MAX_UPLOAD_BYTES", "largest accepted upload, e.g. 2GiB"),
    "max_recording_seconds": (
        "TAPEVAULT_MAX_RECORDING_SECONDS",
        "longest audio one upload may decode to, e.g. 12h; longer uploads are refused",
    ),
    "tenant_quota": (
        "TAPEVAULT_TENANT_QUOTA",
        "stored audio a tenant may keep, e.g. 50GiB, or unlimited; `tenant set --quota` "
        "overrides it per tenant",
    ),
    "processes": (
        "TAPEVAULT_PROCESSES",
        "server processes sharing the port (each with its event loop and worker threads)",
    ),
    "workers": (
        "TAPEVAULT_WORKERS",
        "finalization worker threads inside serve (0: run `tapevault worker` separately)",
    ),
    "cors_origins": (
        "TAPEVAULT_CORS_ORIGINS",
        "comma-separated origins allowed to play media cross-origin, or *",
    ),
    "audit": (
        "TAPEVAULT_AUDIT",
        "on: the durable, hash-chained access log; off: JSON log lines only (benchmarks)",
    ),
    "request_log": (
        "TAPEVAULT_REQUEST_LOG",
        "on: one JSON line per request on stderr (logger tapevault.request); off: none "
        "(X-Request-Id is still returned and recorded)",
    ),
    "audit_durable": (
        "TAPEVAULT_AUDIT_DURABLE",
        "all: every audited answer waits for its record's commit; media: URL issuance records "
        "are committed just after the answer (audio, metadata, deletions, holds still wait)",
    ),
    "audit_key_file": (
        "TAPEVAULT_AUDIT_KEY_FILE",
        "Ed25519 key that signs audit checkpoints (default: DATA_DIR/audit-signing.pem)",
    ),
    "audit_checkpoint_seconds": (
        "TAPEVAULT_AUDIT_CHECKPOINT_SECONDS",
        "sign a checkpoint of the access log this often, when it grew (default: 5s)",
    ),
    "audit_integrate_ms": (
        "TAPEVAULT_AUDIT_INTEGRATE_MS",
        "how often (ms) the integrator sequences, hashes and adds to the Merkle tree the records "
        "made durable meanwhile, and how often other processes check it is alive (default: 100)",
    ),
    "audit_checkpoint_log": (
        "TAPEVAULT_AUDIT_CHECKPOINT_LOG",
        "append-only journal of every signed checkpoint, outside the database "
        "(default: DATA_DIR/audit-checkpoints.log)",
    ),
    "audit_retention": (
        "TAPEVAULT_AUDIT_RETENTION",
        "keep access records this long (its own retention, apart from audio), e.g. 6y",
    ),
    "playback_idle": (
        "TAPEVAULT_PLAYBACK_IDLE",
        "a playback's Range requests fold into one access record until it is idle this long",
    ),
    "player_media": (
        "TAPEVAULT_PLAYER_MEDIA_SECONDS",
        "lifetime of the media URLs the player page gets (it renews them as it plays), e.g. 5m",
    ),
    "direct_streams": (
        "TAPEVAULT_DIRECT_STREAMS",
        "on: live streams skip ASGI after the WebSocket handshake (faster); off: served "
        "through ASGI like every other route",
    ),
    "job_lease": (
        "TAPEVAULT_JOB_LEASE",
        "how long a worker holds a job without renewing it (it renews a third of this apart); a "
        "dead node's jobs are taken over this long after it died, e.g. 60s",
    ),
    "stream_upload_interval": (
        "TAPEVAULT_STREAM_UPLOAD_INTERVAL",
        "copy each live stream's acknowledged audio to the object store this often, e.g. 10s "
        "(what the loss of a whole node can lose); 0: only when the stream ends (a store on "
        "the node's own filesystem is never copied to)",
    ),
    "stream_node_wait": (
        "TAPEVAULT_STREAM_NODE_WAIT",
        "a live stream taken over by recovery waits this long for the node holding its spool "
        "(every acknowledged byte) before another node finalizes it from the store's copy",
    ),
    "purge_interval": (
        "TAPEVAULT_PURGE_INTERVAL",
        "how often the worker purges audio past retention, e.g. 60s",
    ),
    "max_header_bytes": (
        "TAPEVAULT_MAX_HEADER_BYTES",
        "largest request line and headers of one request; larger ones are answered 431",
    ),
    "header_timeout": (
        "TAPEVAULT_HEADER_TIMEOUT",
        "a request's line and headers must arrive within this (else 408 and closed), e.g. 30s",
    ),
    "body_timeout": (
        "TAPEVAULT_BODY_TIMEOUT",
        "a request body silent this long is cut off with 408 (partial uploads not kept); a "
        "client that stops reading its answer this long is dropped",
    ),
    "keepalive_timeout": (
        "TAPEVAULT_KEEPALIVE_TIMEOUT",
        "an idle keep-alive connection is closed after this, e.g. 5s",
    ),
    "trusted_proxies": (
        "TAPEVAULT_TRUSTED_PROXIES",
        "comma-separated IPs or CIDRs of reverse proxies whose X-Forwarded-For names the "
        "client (default: none, the socket's peer is the client)",
    ),
    "shutdown_grace": (
        "TAPEVAULT_SHUTDOWN_GRACE",
        "on SIGTERM, how long requests in flight (downloads) may take to finish before they "
        "are cut, e.g. 30s; no new connection is accepted meanwhile",
    ),
    "metrics_listen": (
        "TAPEVAULT_METRICS_LISTEN",
        "host:port of a separate listener serving /metrics without a key, e.g. 127.0.0.1:9464 "
        "(default: none; /metrics on the main port needs an admin API key)",
    ),
    "webhook_allow_private": (
        "TAPEVAULT_WEBHOOK_ALLOW_PRIVATE",
        "webhook receivers on loopback, private or link-local addresses: off (default, public "
        "addresses only, against SSRF), on, or comma-separated CIDRs allowed",
    ),
    "webhook_retry_schedule": (
        "TAPEVAULT_WEBHOOK_RETRY_SCHEDULE",
        "delays before each webhook delivery attempt, comma-separated (default: the Standard "
        "Webhooks schedule 0,5s,5m,30m,2h,5h,10h,10h, about three days)",
    ),
    "webhook_timeout": (
        "TAPEVAULT_WEBHOOK_TIMEOUT",
        "a webhook receiver must answer (connect to response headers) within this, e.g. 15s",
    ),
    "accel_redirect": (
        "TAPEVAULT_ACCEL_REDIRECT",
        "nginx's internal location for the local store, e.g. /_tapevault_files/: media GETs "
        "are validated and recorded here and their bytes sent by nginx (X-Accel-Redirect); "
        "default: none, tapevault sends them",
    ),
    "accel_log": (
        "TAPEVAULT_ACCEL_LOG",
        "nginx's delivery log (what it sent for each X-Accel-Redirect), required with "
        "TAPEVAULT_ACCEL_REDIRECT, e.g. /var/log/nginx/tapevault-delivery.log",
    ),
    "accel_authz": (
        "TAPEVAULT_ACCEL_AUTHZ_SECONDS",
        "with TAPEVAULT_ACCEL_REDIRECT and the site's seek location switched on: nginx may "
        "serve a playback's ranges without asking for this long after tapevault authorised "
        "it (1 to 5 s; a revoked key or a deletion reaches playing clients within it); "
        "default 0, nginx asks for every response",
    ),
}


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_size(setting: str, text: str) -> int:
    """``512M``, ``2GiB``, ``1048576`` -> bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(setting, f"{text!r} is not a size (examples: 1048576, 512M, 2GiB)")
    unit = (match.group(2) or "").lower()[:1]
    value = int(match.group(1)) * _SIZE_UNITS[unit]
    if value <= 0:
        raise ConfigError(setting, "must be positive")
    return value


def parse_quota(setting: str, text: str) -> int | None:
    """A storage quota: a size (``50GiB``), or ``unlimited``/``none``/``off`` -> None."""
    if text.strip().lower() in ("unlimited", "none", "off"):
        return None
    return parse_size(setting, text)


@dataclass(frozen=True)
class Settings:
    """Everything a tapevault process needs to know, validated."""

    data_dir: Path
    database_url: str = field(repr=False)
    public_url: str
    storage_url: str
    storage_endpoint: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    max_upload_bytes: int = 2 * 1024**3
    max_recording_seconds: int = 12 * 3600
    tenant_quota_bytes: int | None = None  # None: unlimited
    cors_origins: tuple[str, ...] = ("*",)
    workers: int = 1
    processes: int = 1
    audit: bool = True
    request_log: bool = True
    audit_durable_all: bool = True
    audit_key_file: Path | None = None  # None: DATA_DIR/audit-signing.pem
    audit_checkpoint_seconds: int = 5
    audit_integrate_ms: int = 100
    audit_checkpoint_log: Path | None = None  # None: DATA_DIR/audit-checkpoints.log
    audit_retention_seconds: int = 6 * 365 * 86400
    purge_interval_seconds: int = 60
    job_lease_seconds: int = 60
    playback_idle_seconds: int = 30
    player_media_seconds: int = 300
    direct_streams: bool = True
    stream_upload_interval_seconds: int = 10  # 0: only when the stream ends
    stream_node_wait_seconds: int = 600
    max_header_bytes: int = 64 * 1024
    header_timeout_seconds: int = 30
    body_timeout_seconds: int = 60
    keepalive_timeout_seconds: int = 5
    trusted_proxies: tuple[str, ...] = ()
    shutdown_grace_seconds: int = 30
    metrics_listen: tuple[str, int] | None = None
    webhook_allow_private: str = "off"  # "off", "on" or normalised CIDRs (webhooks/ssrf.py)
    webhook_retry_schedule: tuple[int, ...] = RETRY_SCHEDULE_SECONDS
    webhook_timeout_seconds: int = 15
    accel_redirect: str | None = None  # nginx's internal location (http/xaccel.py)
    accel_log: Path | None = None  # nginx's delivery log (deliverylog.py)
    accel_authz_seconds: int = 0  # nginx's cached authorisations (http/xaccel.py), 0: none

    def __repr__(self) -> str:
        return (
            f"Settings(data_dir={str(self.data_dir)!r}, "
            f"database_url={mask_url(self.database_url)!r}, public_url={self.public_url!r}, "
            f"storage_url={self.storage_url!r}, "
            f"storage_endpoint={mask_url(self.storage_endpoint or '')!r}, "
            f"host={self.host!r}, port={self.port}, "
            f"max_upload_bytes={self.max_upload_bytes}, "
            f"max_recording_seconds={self.max_recording_seconds}, "
            f"tenant_quota_bytes={self.tenant_quota_bytes}, cors_origins={self.cors_origins!r}, "
            f"workers={self.workers}, processes={self.processes}, audit={self.audit}, "
            f"request_log={self.request_log}, "
            f"audit_durable_all={self.audit_durable_all}, "
            f"audit_checkpoint_seconds={self.audit_checkpoint_seconds}, "
            f"audit_integrate_ms={self.audit_integrate_ms}, "
            f"audit_retention_seconds={self.audit_retention_seconds}, "
            f"purge_interval_seconds={self.purge_interval_seconds}, "
            f"job_lease_seconds={self.job_lease_seconds}, "
            f"playback_idle_seconds={self.playback_idle_seconds}, "
            f"player_media_seconds={self.player_media_seconds}, "
            f"direct_streams={self.direct_streams}, "
            f"stream_upload_interval_seconds={self.stream_upload_interval_seconds}, "
            f"stream_node_wait_seconds={self.stream_node_wait_seconds}, "
            f"max_header_bytes={self.max_header_bytes}, "
            f"header_timeout_seconds={self.header_timeout_seconds}, "
            f"body_timeout_seconds={self.body_timeout_seconds}, "
            f"keepalive_timeout_seconds={self.keepalive_timeout_seconds}, "
            f"trusted_proxies={self.trusted_proxies!r}, "
            f"shutdown_grace_seconds={self.shutdown_grace_seconds}, "
            f"metrics_listen={self.metrics_listen!r}, "
            f"webhook_allow_private={self.webhook_allow_private!r}, "
            f"webhook_retry_schedule={self.webhook_retry_schedule!r}, "
            f"webhook_timeout_seconds={self.webhook_timeout_seconds}, "
            f"accel_redirect={self.accel_redirect!r}, "
            f"accel_log={str(self.accel_log) if self.accel_log else None!r}, "
            f"accel_authz_seconds={self.accel_authz_seconds})"
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def load(
        cls, flags: Mapping[str, object | None] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Build from flags (None = not given) over ``TAPEVAULT_*`` variables over defaults."""
        flags = flags or {}
        env = os.environ if env is None else env

        def pick(name: str) -> str | None:
            value = flags.get(name)
            if value is not None:
                return str(value)
            return env.get(SETTINGS_DOC[name][0]) or None

        data_dir = Path(pick("data_dir") or "./tapevault-data").expanduser().resolve()
        host = pick("host") or "127.0.0.1"
        port = _parse_port(pick("port") or "8080")
        database_url = pick("database_url") or f"sqlite:///{data_dir / 'tapevault.db'}"
        _check_database_url(database_url)
        public_url = _check_public_url(pick("public_url") or f"http://{_url_host(host)}:{port}")
        storage_url = pick("storage_url") or (data_dir / "audio").as_uri()
        _check_storage_url(storage_url)
        storage_endpoint = _check_storage_endpoint(pick("storage_endpoint"))
        max_upload = parse_size("TAPEVAULT_MAX_UPLOAD_BYTES", pick("max_upload_bytes") or "2GiB")
        max_seconds = _duration(
            "TAPEVAULT_MAX_RECORDING_SECONDS", pick("max_recording_seconds") or "12h"
        )
        quota = parse_quota("TAPEVAULT_TENANT_QUOTA", pick("tenant_quota") or "unlimited")
        origins = tuple(
            o.strip() for o in (pick("cors_origins") or "*").split(",") if o.strip()
        ) or ("*",)
        workers = _count("TAPEVAULT_WORKERS", pick("workers") or "1", 0, 64)
        processes = _count("TAPEVAULT_PROCESSES", pick("processes") or "1", 1, 64)
        audit = _either("TAPEVAULT_AUDIT", pick("audit") or "on", "on", "off")
        request_log = _either("TAPEVAULT_REQUEST_LOG", pick("request_log") or "on", "on", "off")
        direct_streams = _either(
            "TAPEVAULT_DIRECT_STREAMS", pick("direct_streams") or "on", "on", "off"
        )
        durable_all = _either(
            "TAPEVAULT_AUDIT_DURABLE", pick("audit_durable") or "all", "all", "media"
        )
        key_file = pick("audit_key_file")
        checkpoint_log = pick("audit_checkpoint_log")
        trusted_proxies = _networks("TAPEVAULT_TRUSTED_PROXIES", pick("trusted_proxies") or "")
        accel_redirect, accel_log = _accel(
            pick("accel_redirect"), pick("accel_log"), storage_url, trusted_proxies
        )
        accel_authz = _count(
            "TAPEVAULT_ACCEL_AUTHZ_SECONDS", pick("accel_authz") or "0", 0, MAX_AUTHZ_SECONDS
        )
        if accel_authz and accel_redirect is None:
            raise ConfigError(
                "TAPEVAULT_ACCEL_AUTHZ_SECONDS", "is only used with TAPEVAULT_ACCEL_REDIRECT"
            )
        return cls(
            accel_redirect=accel_redirect,
            accel_log=accel_log,
            accel_authz_seconds=accel_authz,
            max_header_bytes=parse_size(
                "TAPEVAULT_MAX_HEADER_BYTES", pick("max_header_bytes") or "64KiB"
            ),
            header_timeout_seconds=_duration(
                "TAPEVAULT_HEADER_TIMEOUT", pick("header_timeout") or "30"
            ),
            body_timeout_seconds=_duration("TAPEVAULT_BODY_TIMEOUT", pick("body_timeout") or "60"),
            keepalive_timeout_seconds=_duration(
                "TAPEVAULT_KEEPALIVE_TIMEOUT", pick("keepalive_timeout") or "5"
            ),
            trusted_proxies=trusted_proxies,
            shutdown_grace_seconds=_duration(
                "TAPEVAULT_SHUTDOWN_GRACE", pick("shutdown_grace") or "30"
            ),
            metrics_listen=_listen_address("TAPEVAULT_METRICS_LISTEN", pick("metrics_listen")),
            webhook_allow_private=_address_policy(pick("webhook_allow_private") or "off"),
            webhook_retry_schedule=_schedule(pick("webhook_retry_schedule")),
            webhook_timeout_seconds=_webhook_timeout(pick("webhook_timeout") or "15"),
            direct_streams=direct_streams,
            stream_upload_interval_seconds=_duration_or_zero(
                "TAPEVAULT_STREAM_UPLOAD_INTERVAL", pick("stream_upload_interval") or "10"
            ),
            stream_node_wait_seconds=_duration_or_zero(
                "TAPEVAULT_STREAM_NODE_WAIT", pick("stream_node_wait") or "10m"
            ),
            audit=audit,
            request_log=request_log,
            audit_durable_all=durable_all,
            audit_key_file=Path(key_file).expanduser().resolve() if key_file else None,
            audit_checkpoint_seconds=_duration(
                "TAPEVAULT_AUDIT_CHECKPOINT_SECONDS", pick("audit_checkpoint_seconds") or "5"
            ),
            audit_integrate_ms=_count(
                "TAPEVAULT_AUDIT_INTEGRATE_MS", pick("audit_integrate_ms") or "100", 10, 60_000
            ),
            audit_checkpoint_log=Path(checkpoint_log).expanduser().resolve()
            if checkpoint_log
            else None,
            audit_retention_seconds=_duration(
                "TAPEVAULT_AUDIT_RETENTION", pick("audit_retention") or "6y"
            ),
            purge_interval_seconds=_duration(
                "TAPEVAULT_PURGE_INTERVAL", pick("purge_interval") or "60"
            ),
            job_lease_seconds=_job_lease(pick("job_lease") or "60"),
            playback_idle_seconds=_duration(
                "TAPEVAULT_PLAYBACK_IDLE", pick("playback_idle") or "30"
            ),
            player_media_seconds=_duration(
                "TAPEVAULT_PLAYER_MEDIA_SECONDS", pick("player_media") or "300"
            ),
            workers=workers,
            processes=processes,
            data_dir=data_dir,
            database_url=database_url,
            public_url=public_url,
            storage_url=storage_url,
            storage_endpoint=storage_endpoint,
            host=host,
            port=port,
            max_upload_bytes=max_upload,
            max_recording_seconds=max_seconds,
            tenant_quota_bytes=quota,
            cors_origins=origins,
        )

    def environment(self) -> dict[str, str]:
        """These settings as ``TAPEVAULT_*`` variables, for processes started from this one."""
        values = {
            "data_dir": str(self.data_dir),
            "database_url": self.database_url,
            "public_url": self.public_url,
            "storage_url": self.storage_url,
            "host": self.host,
            "port": str(self.port),
            "max_upload_bytes": str(self.max_upload_bytes),
            "max_recording_seconds": str(self.max_recording_seconds),
            "tenant_quota": "unlimited"
            if self.tenant_quota_bytes is None
            else str(self.tenant_quota_bytes),
            "cors_origins": ",".join(self.cors_origins),
            "workers": str(self.workers),
            "processes": str(self.processes),
            "audit": "on" if self.audit else "off",
            "request_log": "on" if self.request_log else "off",
            "audit_durable": "all" if self.audit_durable_all else "media",
            "audit_checkpoint_seconds": str(self.audit_checkpoint_seconds),
            "audit_integrate_ms": str(self.audit_integrate_ms),
            "audit_retention": str(self.audit_retention_seconds),
            "purge_interval": str(self.purge_interval_seconds),
            "job_lease": str(self.job_lease_seconds),
            "playback_idle": str(self.playback_idle_seconds),
            "player_media": str(self.player_media_seconds),
            "direct_streams": "on" if self.direct_streams else "off",
            "stream_upload_interval": str(self.stream_upload_interval_seconds),
            "stream_node_wait": str(self.stream_node_wait_seconds),
            "max_header_bytes": str(self.max_header_bytes),
            "header_timeout": str(self.header_timeout_seconds),
            "body_timeout": str(self.body_timeout_seconds),
            "keepalive_timeout": str(self.keepalive_timeout_seconds),
            "trusted_proxies": ",".join(self.trusted_proxies),
            "shutdown_grace": str(self.shutdown_grace_seconds),
            "webhook_allow_private": self.webhook_allow_private,
            "webhook_retry_schedule": ",".join(str(s) for s in self.webhook_retry_schedule),
            "webhook_timeout": str(self.webhook_timeout_seconds),
        }
        if self.metrics_listen is not None:
            host, port = self.metrics_listen
            values["metrics_listen"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self.storage_endpoint is not None:
            values["storage_endpoint"] = self.storage_endpoint
        if self.audit_key_file is not None:
            values["audit_key_file"] = str(self.audit_key_file)
        if self.audit_checkpoint_log is not None:
            values["audit_checkpoint_log"] = str(self.audit_checkpoint_log)
        if self.accel_redirect is not None:
            values["accel_redirect"] = self.accel_redirect
        if self.accel_log is not None:
            values["accel_log"] = str(self.accel_log)
        if self.accel_authz_seconds:
            values["accel_authz"] = str(self.accel_authz_seconds)
        return {SETTINGS_DOC[name][0]: value for name, value in values.items()}

    @property
    def audit_key_path(self) -> Path:
        return self.audit_key_file or self.data_dir / "audit-signing.pem"

    @property
    def audit_checkpoint_log_path(self) -> Path:
        return self.audit_checkpoint_log or self.data_dir / "audit-checkpoints.log"

    def ensure_data_dir(self) -> None:
        """Create the data directory and check that a file can be written in it, failing with
        the setting's name if not (a read-only mount otherwise surfaced later as "the database
        cannot be reached", or a traceback from whichever file was written first)."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                "TAPEVAULT_DATA_DIR", f"cannot create {self.data_dir}: {exc}"
            ) from exc
        try:
            with tempfile.TemporaryFile(dir=self.data_dir):
                pass
        except OSError as exc:
            raise ConfigError(
                "TAPEVAULT_DATA_DIR",
                f"cannot write in {self.data_dir}: {exc.strerror or exc}",
            ) from exc


# The longest a front proxy may go on serving a playback without asking (a revocation, a
# deletion's record or a retention deadline reaches playing clients within it).
MAX_AUTHZ_SECONDS = 5
_ACCEL_LOCATION = re.compile(r"/[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*/")


def _accel(
    location: str | None, path: str | None, storage_url: str, proxies: tuple[str, ...]
) -> tuple[str | None, Path | None]:
    """``TAPEVAULT_ACCEL_REDIRECT`` and ``TAPEVAULT_ACCEL_LOG``, checked together: a location
    (``/name/``) only with the local store, with the log nginx reports deliveries to, and with
    nginx among the trusted proxies (only requests from one are handed off)."""
    if location is None:
        if path is not None:
            raise ConfigError("TAPEVAULT_ACCEL_LOG", "is only used with TAPEVAULT_ACCEL_REDIRECT")
        return None, None
    location = location.strip()
    if not _ACCEL_LOCATION.fullmatch(location) or len(location) > 200:
        raise ConfigError(
            "TAPEVAULT_ACCEL_REDIRECT",
            f"{location[:100]!r} is not a location path such as /_tapevault_files/ "
            "(letters, digits, _ and -, starting and ending with /)",
        )
    if not storage_url.startswith("file://"):
        raise ConfigError(
            "TAPEVAULT_ACCEL_REDIRECT",
            "nginx can send only files of the local store (TAPEVAULT_STORAGE_URL=file://...); "
            "object stores are served by tapevault",
        )
    if not proxies:
        raise ConfigError(
            "TAPEVAULT_ACCEL_REDIRECT",
            "only requests from nginx are handed to it: set TAPEVAULT_TRUSTED_PROXIES to "
            "nginx's address",
        )
    if path is None or not path.strip():
        raise ConfigError(
            "TAPEVAULT_ACCEL_LOG",
            "TAPEVAULT_ACCEL_REDIRECT needs the delivery log nginx writes (deploy/nginx)",
        )
    return location, Path(path.strip()).expanduser().resolve()


def _count(setting: str, text: str, low: int, high: int) -> int:
    if not is_digits(text) or not low <= int(text) <= high:
        raise ConfigError(setting, f"{text!r} is not a count from {low} to {high}")
    return int(text)


def _either(setting: str, text: str, yes: str, no: str) -> bool:
    """Whether ``text`` (in any case) is ``yes``; a ConfigError unless it is ``yes`` or ``no``."""
    value = text.lower()
    if value not in (yes, no):
        raise ConfigError(setting, f"{value!r} is neither {yes} nor {no}")
    return value == yes


def _duration(setting: str, text: str) -> int:
    try:
        return parse_duration(text)
    except InvalidRequest as exc:
        raise ConfigError(setting, exc.message) from exc


def _job_lease(text: str) -> int:
    """At least a second: a lease renewed a third of it apart must outlast one renewal."""
    seconds = _duration("TAPEVAULT_JOB_LEASE", text)
    if seconds < 1:
        raise ConfigError("TAPEVAULT_JOB_LEASE", "a job lease must be at least 1s")
    return seconds


def _duration_or_zero(setting: str, text: str) -> int:
    """A duration, or 0 (written ``0``, ``0s``...): "never on a timer" for the setting."""
    if _ZERO.fullmatch(text):
        return 0
    return _duration(setting, text)


def _networks(setting: str, text: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks, each checked, in a normal form."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(setting, f"{item!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _listen_address(setting: str, text: str | None) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port); None when not set."""
    if text is None or not text.strip():
        return None
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not is_digits(port) or not 0 < int(port) < 65536:
        raise ConfigError(setting, f"{text!r} is not host:port (e.g. 127.0.0.1:9464)")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
            raise ConfigError(setting, f"{host!r} is not an IP address or host name") from None
    return host, int(port)


def _address_policy(text: str) -> str:
    """``off``, ``on`` or CIDRs (normalised), as webhooks/ssrf.py reads them."""
    try:
        return AddressPolicy.parse(text).describe()
    except ValueError:
        raise ConfigError(
            "TAPEVAULT_WEBHOOK_ALLOW_PRIVATE",
            f"{text[:100]!r} is neither on, off nor a list of IP addresses or CIDR networks",
        ) from None


def _schedule(text: str | None) -> tuple[int, ...]:
    if text is None:
        return RETRY_SCHEDULE_SECONDS
    steps = tuple(
        _duration("TAPEVAULT_WEBHOOK_RETRY_SCHEDULE", part.strip()) if part.strip() != "0" else 0
        for part in text.split(",")
    )
    if not 1 <= len(steps) <= 20:
        raise ConfigError("TAPEVAULT_WEBHOOK_RETRY_SCHEDULE", "give from 1 to 20 delays")
    return steps


def _webhook_timeout(text: str) -> int:
    seconds = _duration("TAPEVAULT_WEBHOOK_TIMEOUT", text)
    if not 1 <= seconds <= 300:
        raise ConfigError("TAPEVAULT_WEBHOOK_TIMEOUT", "must be from 1 second to 5 minutes")
    return seconds


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - only naming the wildcard, not binding it
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _parse_port(text: str) -> int:
    if not is_digits(text) or not 0 < int(text) < 65536:
        raise ConfigError("TAPEVAULT_PORT", f"{text!r} is not a port number (1-65535)")
    return int(text)


def _check_database_url(url: str) -> None:
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("sqlite", "postgresql", "postgres", "postgresql+psycopg"):
        raise ConfigError(
            "TAPEVAULT_DATABASE_URL",
            f"unsupported scheme {scheme!r}: use sqlite:///PATH or postgresql://...",
        )
    if scheme == "sqlite" and not url.startswith("sqlite:///"):
        raise ConfigError("TAPEVAULT_DATABASE_URL", "SQLite URLs look like sqlite:///path/to/db")


def _check_public_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("TAPEVAULT_PUBLIC_URL", f"{url!r} is not an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise ConfigError("TAPEVAULT_PUBLIC_URL", "must not carry a query or fragment")
    return url.rstrip("/")


def _check_storage_url(url: str) -> None:
    scheme, _, rest = url.partition("://")
    if scheme == "file" and rest.startswith("/"):
        return
    if scheme in ("s3", "gs", "az") and rest and not rest.startswith("/"):
        bucket, _, prefix = rest.partition("/")
        if bucket and ".." not in prefix.split("/"):
            return
    raise ConfigError(
        "TAPEVAULT_STORAGE_URL",
        f"unsupported storage {url!r}: use file:///PATH, s3://BUCKET/PREFIX, "
        "gs://BUCKET/PREFIX or az://CONTAINER/PREFIX",
    )


def _check_storage_endpoint(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError("TAPEVAULT_STORAGE_ENDPOINT", f"{url!r} is not an http(s) URL")
    return url.rstrip("/")
