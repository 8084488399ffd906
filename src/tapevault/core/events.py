"""What tapevault tells webhook receivers, as typed values (the outbox's vocabulary).

An ``Event`` is made by the core where a state change is decided and handed to the repository
write that makes the change, which stores it in the same transaction (the outbox, see
db/outbox.py): an event exists exactly when its change committed. Payloads are thin on purpose:
ids, a status and a sequence number; no URLs (they expire, and a receiver fetches fresh ones with
its own credentials) and nothing a person said or is called (no PHI, no session attributes).

``sequence`` counts the events of one subject (a recording, or a session for session events)
from 1, so a receiver can tell a late duplicate from a new change.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tapevault.core.lifecycle import PENDING, status_of
from tapevault.core.model import (
    MERGED_CHANNEL,
    MERGED_SEQUENCE,
    Recording,
    RecordingStatus,
    Session,
    SessionStatus,
)


class EventType(enum.StrEnum):
    RECORDING_AVAILABLE = "recording.available"
    RECORDING_FAILED = "recording.failed"
    SESSION_COMPLETED = "session.completed"
    RECORDING_EXPIRED = "recording.expired"
    RECORDING_DELETED = "recording.deleted"
    LEGAL_HOLD_SET = "legal_hold.set"
    LEGAL_HOLD_CLEARED = "legal_hold.cleared"


EVENT_TYPES = frozenset(t.value for t in EventType)


@dataclass(frozen=True, slots=True)
class Event:
    """One change worth telling, before the repository numbers it."""

    type: EventType
    partner_id: str
    session_id: str
    recording_id: str | None
    status: str
    at_ms: int

    @property
    def subject(self) -> str:
        """What ``sequence`` counts within: the recording, or the session."""
        if self.recording_id is not None:
            return f"recording:{self.recording_id}"
        return f"session:{self.session_id}"

    def payload(self, sequence: int) -> dict[str, Any]:
        data: dict[str, Any] = {"session_id": self.session_id}
        if self.recording_id is not None:
            data["recording_id"] = self.recording_id
        data["status"] = self.status
        data["sequence"] = sequence
        return {"type": self.type.value, "timestamp": _iso(self.at_ms), "data": data}


def recording_finished(recording: Recording, at_ms: int) -> Event | None:
    """``recording.available`` or ``recording.failed`` for a recording written to that final
    state (the caller writes it only after its audio is stored: available means readable).
    A merged rendition is derived, not recorded: it has no events."""
    if recording.channel == MERGED_CHANNEL:
        return None
    kinds = {
        RecordingStatus.AVAILABLE: EventType.RECORDING_AVAILABLE,
        RecordingStatus.FAILED: EventType.RECORDING_FAILED,
    }
    kind = kinds.get(recording.status)
    if kind is None:
        return None
    return _about(kind, recording, at_ms)


def recording_erased(recording: Recording, status: RecordingStatus, at_ms: int) -> Event | None:
    """``recording.expired`` (the purge) or ``recording.deleted`` (on request)."""
    if recording.channel == MERGED_CHANNEL:
        return None
    kind = (
        EventType.RECORDING_DELETED
        if status is RecordingStatus.DELETED
        else EventType.RECORDING_EXPIRED
    )
    return Event(
        kind,
        recording.partner_id,
        recording.session_id,
        recording.recording_id,
        status.value,
        at_ms,
    )


def session_settled(session: Session, recordings: Sequence[Recording], at_ms: int) -> Event | None:
    """``session.completed`` when the session, as it is after a change that ended it or
    finished one of its pending recordings, has nothing left to wait for; its status says
    ``completed`` or ``failed`` (nothing available). Called inside that change's transaction,
    with the session locked, so of two recordings finishing together exactly one sees it."""
    own = [r for r in recordings if r.sequence_number > MERGED_SEQUENCE]
    status = status_of(
        session,
        recorded=bool(own),
        pending=any(r.status in PENDING for r in own),
        available=any(r.status is RecordingStatus.AVAILABLE for r in own),
    )
    if status not in (SessionStatus.COMPLETED, SessionStatus.FAILED):
        return None
    return Event(
        EventType.SESSION_COMPLETED,
        session.partner_id,
        session.session_id,
        None,
        status.value,
        at_ms,
    )


def hold_changed(session: Session, held: bool, at_ms: int) -> Event:
    """``legal_hold.set`` or ``legal_hold.cleared`` (never the reason: it may name people)."""
    kind = EventType.LEGAL_HOLD_SET if held else EventType.LEGAL_HOLD_CLEARED
    status = "held" if held else "released"
    return Event(kind, session.partner_id, session.session_id, None, status, at_ms)


def _about(kind: EventType, recording: Recording, at_ms: int) -> Event:
    return Event(
        kind,
        recording.partner_id,
        recording.session_id,
        recording.recording_id,
        recording.status.value,
        at_ms,
    )


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
