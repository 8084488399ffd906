"""Typed results: frozen dataclasses built from the wire shapes of each dialect.

Times arrive as Unix seconds in some answers and ISO-8601 in others; both become an aware
``datetime`` here, so callers never care which.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tapevault.client.errors import ProtocolError

PENDING = frozenset({"receiving", "processing"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def safe_name(text: str) -> str:
    """``text`` as a file name that stays in its directory whatever a server answered: only
    letters, digits, ``.``, ``_`` and ``-``, and never starting with a dot."""
    name = _UNSAFE.sub("_", text)
    return "_" + name if not name or name.startswith(".") else name


def count(value: Any, what: str) -> int | None:
    """A whole, non-negative number from JSON (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{what} is not a whole number: {value!r}")
    return value


def digest(value: Any) -> str | None:
    """A sha256 as hex (None or empty: not known)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _SHA256.match(value):
        raise ProtocolError(f"not a sha256: {value!r}")
    return value.lower()


def instant(value: Any) -> datetime | None:
    """Unix seconds or ISO-8601 as an aware datetime (None stays None)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ProtocolError(f"not a time: {value[:40]!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ProtocolError(f"not a time: {value!r}")


def _obj(body: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise ProtocolError(f"expected a JSON object for {what}")
    return body


@dataclass(frozen=True)
class Recording:
    """One recording of a session, as its session's status describes it."""

    recording_id: str
    session_id: str
    sequence_number: int
    status: str  # receiving, processing, available, failed, expired, deleted
    duration_ms: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    channel: str | None = None
    failure_reason: str | None = None
    expires_at: datetime | None = None

    @property
    def filename(self) -> str:
        """The name the server gives it on download (made safe: it comes from the server)."""
        suffix = self.channel if self.sequence_number == 0 else self.sequence_number
        return safe_name(f"{self.session_id}-{suffix}.wav")

    @classmethod
    def from_wire(cls, session_id: str, body: Any) -> Recording:
        r = _obj(body, "a recording")
        try:
            return cls(
                recording_id=str(r["recording_id"]),
                session_id=session_id,
                sequence_number=count(r.get("sequence_number"), "sequence_number") or 0,
                status=str(r["status"]),
                duration_ms=count(r.get("duration_ms"), "duration_ms"),
                sample_rate=count(r.get("sample_rate"), "sample_rate"),
                channels=count(r.get("channels"), "channels"),
                size_bytes=count(r.get("bytes"), "bytes"),
                sha256=digest(r.get("sha256")),
                channel=r.get("channel"),
                failure_reason=r.get("failure_reason"),
                expires_at=instant(r.get("expires_at")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed recording: {exc}") from None


@dataclass(frozen=True)
class Session:
    """A session's status (Suki's ``GET /api/v1/ambient/session/{id}``)."""

    session_id: str
    status: str  # created, in_progress, processing, completed, failed
    kind: str | None = None
    external_id: str | None = None
    created_at: datetime | None = None
    ended_at: datetime | None = None
    recordings: tuple[Recording, ...] = ()

    @property
    def settled(self) -> bool:
        """No recording is still arriving or being processed."""
        return not any(r.status in PENDING for r in self.recordings)

    @classmethod
    def from_wire(cls, body: Any) -> Session:
        s = _obj(body, "a session")
        try:
            session_id = str(s.get("ambient_session_id") or s["session_id"])
            return cls(
                session_id=session_id,
                status=str(s.get("status", "")),
                kind=s.get("kind"),
                external_id=s.get("external_id"),
                created_at=instant(s.get("created_at")),
                ended_at=instant(s.get("ended_at")),
                recordings=tuple(Recording.from_wire(session_id, r) for r in s["recordings"]),
            )
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"malformed session: {exc}") from None


@dataclass(frozen=True)
class RecordingUrl:
    """A signed URL to one recording (Suki's ``presigned_url``)."""

    recording_id: str
    url: str
    expires_at: datetime | None
    sequence_number: int

    @classmethod
    def many_from_wire(cls, body: Any) -> list[RecordingUrl]:
        b = _obj(body, "recording URLs")
        try:
            return [
                cls(
                    recording_id=str(r["recording_id"]),
                    url=str(r["presigned_url"]),
                    expires_at=instant(r.get("expires_at")),
                    sequence_number=int(r.get("sequence_number") or 0),
                )
                for r in b["recordings"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed recording URLs: {exc}") from None


@dataclass(frozen=True)
class CallUrls:
    """Amigo's ``RecordingUrlsResponse``: signed URLs valid one hour (None: never recorded)."""

    call_sid: str
    inbound_url: str | None
    outbound_url: str | None
    metadata_url: str | None

    @classmethod
    def from_wire(cls, body: Any) -> CallUrls:
        b = _obj(body, "call URLs")
        return cls(
            call_sid=str(b.get("call_sid", "")),
            inbound_url=b.get("inbound_url"),
            outbound_url=b.get("outbound_url"),
            metadata_url=b.get("metadata_url"),
        )


@dataclass(frozen=True)
class CallMetadata:
    """Amigo's ``RecordingMetadataResponse`` (the main fields; ``raw`` has them all)."""

    call_sid: str
    duration_seconds: float
    inbound_size_bytes: int
    outbound_size_bytes: int
    call_start: datetime | None
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_wire(cls, body: Any) -> CallMetadata:
        b = _obj(body, "call metadata")
        return cls(
            call_sid=str(b.get("call_sid", "")),
            duration_seconds=float(b.get("duration_seconds") or 0),
            inbound_size_bytes=int(b.get("inbound_size_bytes") or 0),
            outbound_size_bytes=int(b.get("outbound_size_bytes") or 0),
            call_start=instant(b.get("call_start_iso")),
            raw=dict(b),
        )


@dataclass(frozen=True)
class MergedRecording:
    """Kore's answer: ``status`` is success, call_in_progress, media_in_progress,
    media_unavailable or failed; ``file_url`` is set on success."""

    status: str
    file_name: str | None
    file_url: str | None
    message: str | None = None
    retry_after: float | None = None

    @classmethod
    def from_wire(cls, body: Any, retry_after: float | None) -> MergedRecording:
        b = _obj(body, "a Kore answer")
        files = b.get("recording") or []
        first = files[0] if files and isinstance(files[0], Mapping) else {}
        return cls(
            status=str(b.get("status", "")),
            file_name=first.get("fileName"),
            file_url=first.get("fileUrl"),
            message=b.get("message"),
            retry_after=retry_after,
        )


@dataclass(frozen=True)
class Hold:
    reason: str | None
    by: str | None
    since: datetime | None


@dataclass(frozen=True)
class NativeSession:
    """The native API's view of a session: its hold, retention and every recording's
    tombstone."""

    session_id: str
    kind: str | None
    external_id: str | None
    created_at: datetime | None
    hold: Hold | None
    retention_seconds: int | None
    recordings: tuple[Recording, ...]

    @classmethod
    def from_wire(cls, body: Any) -> NativeSession:
        b = _obj(body, "a session")
        try:
            session_id = str(b["session_id"])
            hold = b.get("hold")
            return cls(
                session_id=session_id,
                kind=b.get("kind"),
                external_id=b.get("external_id"),
                created_at=instant(b.get("created_at")),
                hold=None
                if not hold
                else Hold(hold.get("reason"), hold.get("by"), instant(hold.get("since"))),
                retention_seconds=b.get("retention_seconds"),
                recordings=tuple(Recording.from_wire(session_id, r) for r in b["recordings"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(f"malformed session: {exc}") from None


@dataclass(frozen=True)
class AuditPage:
    """One page of the access log; pass ``next_cursor`` back for the next (None: the last)."""

    records: tuple[Mapping[str, Any], ...]
    next_cursor: str | None

    @classmethod
    def from_wire(cls, body: Any) -> AuditPage:
        b = _obj(body, "an audit page")
        records = b.get("records")
        if not isinstance(records, list):
            raise ProtocolError("malformed audit page")
        return cls(tuple(records), b.get("next_cursor"))
