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


class SessionStatus(enum.StrEnum):
    """Lifecycle of a session: created -> in_progress (audio arrived) -> completed (ended)."""

    CREATED = "created"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class RecordingStatus(enum.StrEnum):
    """Lifecycle of one recording. Only AVAILABLE recordings are ever served."""

    AVAILABLE = "available"


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
