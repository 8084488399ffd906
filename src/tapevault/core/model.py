"""The vault's nouns: partners, sessions and recordings, as frozen values.

Times are integer Unix milliseconds (``*_ms``) so that they round-trip exactly through SQLite and
PostgreSQL alike; the API dialects convert to whatever their wire format wants.
"""

from __future__ import annotations

import enum
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
    up, with a reason.
    """

    RECEIVING = "receiving"
    PROCESSING = "processing"
    AVAILABLE = "available"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Partner:
    """A Suki partner: the tenant an ``sdp_suki_token`` selects by its ``partner_id`` claim."""

    partner_id: str
    name: str
    jwt_secret: str = field(repr=False)
    retention_seconds: int
    created_ms: int


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
    # Who is writing a RECEIVING recording, and when it last said so (for crash recovery).
    writer_id: str | None = None
    heartbeat_ms: int | None = None

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
