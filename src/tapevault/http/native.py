"""The native API's wire shapes: sessions, recordings and access-log records.

One time format in every native answer: ISO 8601 in UTC with milliseconds and a ``Z``
(``2026-12-02T16:45:03.123Z``), the form people read and every language parses. The dialects'
shapes (Suki's Unix ``expires_at``, Amigo's ``call_start_iso``) are their seeds' and live in
their own modules; nothing here is shared with them, so changing one never changes the other.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from tapevault.core.audit import AuditRecord
from tapevault.core.catalog import SessionPage, SessionSummary, facts, summarize
from tapevault.core.model import Recording, Session


def instant(ms: int | None) -> str | None:
    """Unix milliseconds as ``2026-12-02T16:45:03.123Z`` (None stays None)."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def recording_body(r: Recording, peaks: Collection[str] | None = None) -> dict[str, Any]:
    """A recording, with its retention and, once its audio is gone, why and when. Given
    ``peaks`` (the ids of recordings whose waveform peaks are stored), ``peaks_available`` too."""
    body = {
        "recording_id": r.recording_id,
        "session_id": r.session_id,
        "sequence_number": r.sequence_number,
        "status": r.status.value,
        "duration_ms": r.duration_ms,
        "sample_rate": r.sample_rate,
        "channels": r.channels,
        "bits_per_sample": r.bits_per_sample,
        "bytes": r.size_bytes,
        "sha256": r.sha256 or None,
        "source_format": r.source_format,
        "recovered": r.recovered,
        "failure_reason": r.failure_reason,
        "channel": r.channel,
        "media_start_at": instant(r.media_start_epoch_ms),
        "created_at": instant(r.created_ms),
        "expires_at": instant(r.expires_ms),
        "retention_policy": r.retention_policy,
        "retention_seconds": r.retention_seconds,
        "purged_at": instant(r.purged_ms),
        "purge_reason": r.purge_reason,
        "deleted_by": r.deleted_by,
    }
    if peaks is not None:
        body["peaks_available"] = r.recording_id in peaks
    return body


def summary_body(summary: SessionSummary) -> dict[str, Any]:
    """A session as the listing shows it."""
    session = summary.session
    return {
        "session_id": session.session_id,
        "kind": session.kind.value,
        "status": summary.status.value,
        "external_id": session.external_id,
        "provider_id": session.provider_id,
        "created_at": instant(session.created_ms),
        "ended_at": instant(session.ended_ms),
        "deleted_at": instant(session.deleted_ms),
        "retention_seconds": session.retention_seconds,
        "hold": None
        if not session.held
        else {
            "reason": session.hold_reason,
            "by": session.hold_by,
            "since": instant(session.hold_set_ms),
        },
        "recording_count": summary.recording_count,
        "duration_ms": summary.duration_ms,
        "expires_at": instant(summary.expires_ms),
    }


def session_body(
    session: Session, recordings: Sequence[Recording], peaks: Collection[str] | None = None
) -> dict[str, Any]:
    """A session as ``GET /api/v1/sessions/{id}`` shows it: the summary and every recording."""
    return {
        **summary_body(summarize(session, facts(recordings))),
        "recordings": [recording_body(r, peaks) for r in recordings],
    }


def page_body(page: SessionPage) -> dict[str, Any]:
    return {
        "sessions": [summary_body(item) for item in page.items],
        "next_cursor": page.next_cursor,
    }


def hold_body(session: Session) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "held": session.held,
        "reason": session.hold_reason,
        "by": session.hold_by,
        "since": instant(session.hold_set_ms),
    }


def record_body(record: AuditRecord) -> dict[str, Any]:
    e = record.entry
    return {
        "seq": record.seq,
        "at": instant(e.at_ms),
        "action": e.action,
        "status": e.status,
        "actor": {"kind": e.actor_kind, "id": e.actor_id, "provider_id": e.provider_id},
        "tenant_id": e.tenant_id,
        "session_id": e.session_id,
        "recording_id": e.recording_id,
        "mode": e.mode,
        "ranges": [list(r) for r in e.ranges],
        "bytes_sent": e.bytes_sent,
        "error": e.error,
        "client_ip": e.client_ip,
        "user_agent": e.user_agent,
        "request_id": e.request_id,
        "detail": e.detail,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }
