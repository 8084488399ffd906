"""The vault's nouns: partners, sessions and recordings, as frozen values.

Times are integer Unix milliseconds (``*_ms``) so that they round-trip exactly through SQLite and
PostgreSQL alike; the API dialects convert to whatever their wire format wants.
"""

from __future__ import annotations

import enum
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


class SessionKind(enum.StrEnum):
    """Which create endpoint made a session; the two draw from distinct id spaces."""

    AMBIENT = "ambient"
    FORM_FILLING = "form_filling"
    CALL = "call"  # a telephony call (Twilio Media Streams), keyed by its callSid


class SessionStatus(enum.StrEnum):
    """Lifecycle of a session: created -> in_progress -> processing -> completed | failed.

    Only CREATED, IN_PROGRESS and COMPLETED are stored (they record what the client did); the
    status shown to clients is derived from those and the recordings' states by
    ``tapevault.core.lifecycle.session_status``.
    """

    CREATED = "created"
    IN_PROGRESS = "in_progress"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class RecordingStatus(enum.StrEnum):
    """Lifecycle of one recording. Only AVAILABLE recordings are ever served.

    RECEIVING: audio is still arriving (a live stream); PROCESSING: complete, being finalized
    (decoded, checksummed) by a worker; AVAILABLE: stored and immutable; FAILED: finalization gave
    up, with a reason; EXPIRED and DELETED: purged by retention or erased on request (tombstones).
    """

    RECEIVING = "receiving"
    PROCESSING = "processing"
    AVAILABLE = "available"
    FAILED = "failed"
    # Tombstones: the audio is gone from storage, the metadata stays (what, when, which policy).
    EXPIRED = "expired"
    DELETED = "deleted"


def _uuid() -> str:
    return str(uuid.uuid4())


def _kore_id(prefix: str) -> Callable[[], str]:
    return lambda: f"{prefix}-{uuid.uuid4()}"


def _secret() -> str:
    return secrets.token_urlsafe(32)


class Delivery(enum.StrEnum):
    """How a tenant's recordings reach players.

    ``GATEWAY``: tapevault's own signed URLs; every byte passes through it, with Range and
    conditional requests, every read in the access log and retention checked on each request.
    ``DIRECT``: the object store's own presigned URLs (S3 SigV4, GCS V4, Azure SAS); tapevault
    checks retention and logs when it issues a URL, and the store serves the bytes.
    """

    GATEWAY = "gateway"
    DIRECT = "direct"


@dataclass(frozen=True, slots=True)
class Tenant:
    """A customer organisation, with one credential of each API dialect it may use.

    ``partner_id`` is the tenant's key everywhere (sessions and recordings carry it) and is also
    its Suki partner id, selected by the ``partner_id`` claim of an ``sdp_suki_token``. The same
    tenant is a Kore.ai app (``bot_id``; JWTs in the ``auth`` header signed with
    ``kore_client_secret`` and carrying ``appId`` = ``kore_client_id``) and an Amigo workspace
    (``workspace_id``; Bearer API keys, stored apart as hashes).
    """

    partner_id: str
    name: str
    # HS256 secret of Suki tokens, and the key of Twilio stream URLs.
    jwt_secret: str = field(repr=False)
    retention_seconds: int
    created_ms: int
    workspace_id: str = field(default_factory=_uuid)
    bot_id: str = field(default_factory=_kore_id("st"))
    kore_client_id: str = field(default_factory=_kore_id("cs"))
    kore_client_secret: str = field(default_factory=_secret, repr=False)
    # A PEM public key or a JWKS document: when set, Suki tokens must be RS256 and signed by it
    # (HS256 tokens are refused, so no key confusion is possible).
    suki_public_keys: str | None = field(default=None, repr=False)
    # Amigo's "Call recording not configured" (503) when off.
    recording_enabled: bool = True
    # Stored audio the tenant may keep: None follows the server's default
    # (TAPEVAULT_TENANT_QUOTA), 0 is unlimited (as in filesystem quotas).
    storage_quota_bytes: int | None = None
    # Who hands out the bytes of its recordings (see ``Delivery``).
    delivery: Delivery = Delivery.GATEWAY


@dataclass(frozen=True, slots=True)
class Session:
    """An ambient or form-filling session; recordings hang off it, numbered 1..n."""

    session_id: str
    partner_id: str
    kind: SessionKind
    status: SessionStatus
    created_ms: int
    ended_ms: int | None = None
    # The caller's own id for the session when it has one (a Twilio callSid), unique per partner.
    external_id: str | None = None
    # What the client told us about a call (direction, service_id, tts_provider); never audio facts.
    attributes: Mapping[str, str] = field(default_factory=dict)
    # Overrides the tenant's retention for this session's recordings (None: the tenant's).
    retention_seconds: int | None = None
    # A legal hold: while set, nothing of the session is purged or deleted.
    hold_reason: str | None = None
    hold_by: str | None = None
    hold_set_ms: int | None = None
    deleted_ms: int | None = None  # when its audio was deleted on request
    # The clinician (Suki's provider_id claim or sdp_provider_id header) who created it.
    provider_id: str | None = None

    @property
    def held(self) -> bool:
        return self.hold_set_ms is not None


@dataclass(frozen=True, slots=True)
class Recording:
    """One finished audio file of a session, stored as canonical PCM WAV.

    Every audio field is computed from the stored audio itself, never taken from the client.
    """

    recording_id: str
    session_id: str
    partner_id: str
    sequence_number: int
    status: RecordingStatus
    storage_key: str
    sample_rate: int
    channels: int
    bits_per_sample: int
    duration_ms: int
    size_bytes: int
    sha256: str
    created_ms: int
    expires_ms: int
    # What the audio was before finalization: "wav/pcm_s16le", "mp3", "stream/pcm_mulaw"...
    source_format: str = ""
    # True when the recording was rebuilt from disk after the process writing it died.
    recovered: bool = False
    failure_reason: str | None = None
    # "inbound" (caller) or "outbound" (agent) for a call's channels; None for a single recording.
    channel: str | None = None
    # Wall-clock time of the first sample, for aligning a call's channels.
    media_start_epoch_ms: int | None = None
    # Who is writing a RECEIVING recording (the fencing token), and when it last renewed its
    # lease, by the database's clock: the repository stamps it (see ingest/recovery.py).
    writer_id: str | None = None
    heartbeat_ms: int | None = None
    # Overrides the session's (or tenant's) retention for this recording alone.
    retention_seconds: int | None = None
    # The tombstone: when the audio was removed, why ("expired", "deleted") and, for a deletion,
    # by whom. ``retention_policy`` names the level that set ``expires_ms``: "tenant",
    # "session" or "recording".
    purged_ms: int | None = None
    purge_reason: str | None = None
    retention_policy: str | None = None
    deleted_by: str | None = None
    # When the tombstoned audio actually left storage (None while that is still to do: the
    # tombstone is written first, so a crash in between never leaves audio servable).
    removed_ms: int | None = None
    # The node (``NodeLocalFiles.node_id``) whose disk holds a live stream's spool: only it can
    # finalize every acknowledged byte of a stream taken over by recovery.
    spool_node: str | None = None

    @property
    def is_servable(self) -> bool:
        return self.status is RecordingStatus.AVAILABLE

    @property
    def etag(self) -> str:
        """Strong ETag: the stored bytes never change, so their digest names them."""
        return f'"{self.sha256[:32]}"'


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key for media URL signatures. The newest active key signs; all listed keys verify."""

    key_id: str
    secret: bytes = field(repr=False)
    created_ms: int


class JobKind(enum.StrEnum):
    FINALIZE = "finalize"
    MERGE = "merge"  # build a session's merged rendition from its available recordings


# A session's merged rendition (all its audio mixed on one timeline, for Kore's "-merged.wav") is
# stored as a recording on this channel with sequence number 0: it is derived, never listed among
# the session's own recordings, and replaced (under a new id) when its inputs change.
MERGED_CHANNEL = "merged"
MERGED_SEQUENCE = 0


class KeyRole(enum.StrEnum):
    """What a workspace API key may do: ``admin`` also manages keys, holds, deletion and reads
    the audit log; ``member`` reads and uploads recordings."""

    ADMIN = "admin"
    MEMBER = "member"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A workspace API key. The key itself is shown once; only its SHA-256 is kept."""

    key_id: str
    partner_id: str
    prefix: str  # the first characters of the key, to recognise it in a list
    key_hash: str = field(repr=False)
    name: str
    role: KeyRole
    created_ms: int
    expires_ms: int | None = None
    revoked_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PlayerLink:
    """A link to the player page of one session. Its secret is shown once; only its SHA-256
    is kept, so a copy of the database opens no player."""

    link_id: str
    partner_id: str
    session_id: str
    secret_hash: str = field(repr=False)
    created_ms: int
    expires_ms: int
    revoked_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A unit of background work, leased by one worker at a time."""

    job_id: str
    kind: JobKind
    recording_id: str
    attempts: int
    run_after_ms: int
    lease_owner: str | None
    lease_expires_ms: int | None
    last_error: str | None
    created_ms: int
    done_ms: int | None
    # Only this node may lease the job until ``node_until_ms``; after that, any node (None: any).
    node: str | None = None
    node_until_ms: int | None = None
