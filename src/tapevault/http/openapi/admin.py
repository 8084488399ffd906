"""The native API: finding sessions, legal holds, retention, deletion and the access log.

tapevault's own (``http/admin.py``), so nothing here comes from a seed: a workspace key as
Bearer (any key finds and reads sessions; the rest needs an admin key), ``{"code", "message"}``
errors, and every time as ISO 8601 UTC with milliseconds (``2026-12-02T16:45:03.123Z``).
Every change is written to the access log before it is made, and so is every read of the log:
when the log cannot be written the answer is 503 and nothing changed.
"""

from __future__ import annotations

from tapevault.core.access import Action
from tapevault.http.openapi.common import (
    BEARER_SCHEME,
    JSON,
    Json,
    Section,
    nullable,
    operation,
    path_param,
    query_param,
    ref,
    response,
)

TAG = "Administration"

_STR = {"type": "string"}
_INT = {"type": "integer"}
_ISO = {
    "type": "string",
    "format": "date-time",
    "description": "ISO 8601, UTC, milliseconds: 2026-12-02T16:45:03.123Z.",
    "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[.][0-9]{3}Z$",
}
_STATUSES = ["created", "in_progress", "processing", "completed", "failed"]
_KINDS = ["ambient", "form_filling", "call"]
_RECORDING = {
    "recording_id": {**_STR, "description": "A ULID."},
    "session_id": _STR,
    "sequence_number": {**_INT, "description": "1..n in the session."},
    "status": {
        "type": "string",
        "enum": ["receiving", "processing", "available", "failed", "expired", "deleted"],
    },
    "duration_ms": _INT,
    "sample_rate": _INT,
    "channels": _INT,
    "bits_per_sample": _INT,
    "bytes": _INT,
    "sha256": nullable(_STR),
    "source_format": {**_STR, "description": "What was uploaded: wav/pcm_s16le, mp3..."},
    "recovered": {"type": "boolean"},
    "failure_reason": nullable(_STR),
    "channel": nullable({**_STR, "description": "inbound or outbound for a call's channels."}),
    "media_start_at": nullable({**_ISO, "description": "Wall-clock time of the first sample."}),
    "created_at": _ISO,
    "expires_at": {**_ISO, "description": "When retention ends for this recording."},
}
_TOMBSTONE = {
    "retention_policy": nullable(
        {
            "type": "string",
            "description": "The level that set expires_at: tenant, session or recording.",
        }
    ),
    "retention_seconds": nullable({**_INT, "description": "This recording's own override."}),
    "purged_at": nullable({**_ISO, "description": "When its audio was removed."}),
    "purge_reason": nullable({"type": "string", "enum": ["expired", "deleted"]}),
    "deleted_by": nullable({**_STR, "description": "The credential that deleted it."}),
}
_PEAKS_AVAILABLE = {
    "type": "boolean",
    "description": (
        "In session views only: whether its waveform peaks are stored (their signed URL comes "
        "with the player's media links)."
    ),
}
_HOLD = {
    "session_id": _STR,
    "held": {"type": "boolean"},
    "reason": nullable(_STR),
    "by": nullable(_STR),
    "since": nullable(_ISO),
}
_SUMMARY = {
    "session_id": _STR,
    "kind": {"type": "string", "enum": _KINDS},
    "status": {"type": "string", "enum": _STATUSES},
    "external_id": nullable({**_STR, "description": "A call's SID."}),
    "provider_id": nullable({**_STR, "description": "Suki's provider id of its creator."}),
    "created_at": _ISO,
    "ended_at": nullable(_ISO),
    "deleted_at": nullable(_ISO),
    "retention_seconds": nullable({**_INT, "description": "The session's override."}),
    "hold": nullable(
        {
            "type": "object",
            "required": ["reason", "by", "since"],
            "properties": {"reason": nullable(_STR), "by": nullable(_STR), "since": _ISO},
        }
    ),
    "recording_count": _INT,
    "duration_ms": {**_INT, "description": "Of all its recordings together."},
    "expires_at": nullable(
        {**_ISO, "description": "When the first of its recordings that has audio expires."}
    ),
}
_SESSION = {**_SUMMARY, "recordings": {"type": "array", "items": ref("RecordingTombstone")}}
_RECORD = {
    "seq": _INT,
    "at": _ISO,
    "action": {"type": "string", "description": "e.g. recording.urls_issue, media.playback."},
    "status": _INT,
    "actor": {
        "type": "object",
        "required": ["kind", "id", "provider_id"],
        "properties": {
            "kind": nullable(_STR),
            "id": nullable({**_STR, "description": "A token id or key id; never a secret."}),
            "provider_id": nullable(_STR),
        },
    },
    "tenant_id": nullable(_STR),
    "session_id": nullable(_STR),
    "recording_id": nullable(_STR),
    "mode": nullable(_STR),
    "ranges": {
        "type": "array",
        "items": {"type": "array", "items": _INT, "minItems": 2, "maxItems": 2},
    },
    "bytes_sent": _INT,
    "error": nullable(_STR),
    "client_ip": nullable(_STR),
    "user_agent": nullable(_STR),
    "request_id": nullable(_STR),
    "detail": nullable({"type": "object"}),
    "prev_hash": _STR,
    "hash": {"type": "string", "description": "sha256 over seq, the record and prev_hash."},
}
_PAGE = {
    "records": {"type": "array", "items": ref("AuditRecord")},
    "next_cursor": nullable({**_STR, "description": "Pass as cursor for the next page."}),
}


def _object(properties: Json, description: str | None = None) -> Json:
    schema: Json = {"type": "object", "required": list(properties), "properties": properties}
    if description:
        schema["description"] = description
    return schema


def _optional(schema: Json, **properties: Json) -> Json:
    """``schema`` with more properties that answers may leave out."""
    return {**schema, "properties": {**schema["properties"], **properties}}


SCHEMAS: Json = {
    "RecordingTombstone": {
        "description": "A recording with its retention and, once its audio is gone, why and when.",
        **_optional(_object({**_RECORDING, **_TOMBSTONE}), peaks_available=_PEAKS_AVAILABLE),
    },
    "SessionAdmin": _object(_SESSION, "A session with its hold and every recording."),
    "SessionSummary": _object(_SUMMARY, "A session as the listing shows it."),
    "SessionPage": _object(
        {
            "sessions": {"type": "array", "items": ref("SessionSummary")},
            "next_cursor": nullable(
                {**_STR, "description": "Pass as cursor for the next page; null on the last."}
            ),
        }
    ),
    "SessionRecordings": _object(
        {"session_id": _STR, "recordings": {"type": "array", "items": ref("RecordingTombstone")}}
    ),
    "Hold": _object(_HOLD),
    "HoldRequest": {
        "type": "object",
        "required": ["reason"],
        "properties": {
            "reason": {"type": "string", "minLength": 1, "maxLength": 1000},
            "by": {"type": "string", "maxLength": 200, "description": "Default: the key."},
        },
    },
    "RetentionRequest": {
        "type": "object",
        "description": "A duration (30d, 12h, 6y...) or seconds; null returns to the level above.",
        "properties": {
            "retention": nullable({"type": "string", "example": "30d"}),
            "retention_seconds": nullable({"type": "integer", "minimum": 1}),
        },
    },
    "Deleted": _object({"deleted": {"type": "array", "items": ref("RecordingTombstone")}}),
    "AuditRecord": _object(_RECORD, "One access-log record, hash-chained to the previous one."),
    "AuditPage": _object(_PAGE),
    "AuditInclusion": _optional(
        _object(
            {
                "status": {"type": "string", "enum": ["included", "pending"]},
                "record": {"type": "object"},
                "leaf_index": nullable(_INT),
                "leaf": {
                    **_STR,
                    "description": "Base64 of the record's canonical bytes: the RFC 9162 leaf "
                    "(leaf hash = SHA-256(0x00 || leaf)).",
                },
            },
            "An RFC 9162 inclusion proof of one record against the newest signed checkpoint; "
            "pending when no signed checkpoint covers the record yet (never missing).",
        ),
        tree_size=_INT,
        root_hash={**_STR, "description": "Base64 of the tree's root hash."},
        proof={"type": "array", "items": _STR, "description": "The audit path, bottom-up."},
        checkpoint={**_STR, "description": "The C2SP signed note (tlog-checkpoint)."},
        reason=_STR,
    ),
    "AuditConsistency": _object(
        {
            "from": _INT,
            "to": _INT,
            "proof": {"type": "array", "items": _STR},
            "checkpoint": nullable(_STR),
        },
        "An RFC 9162 consistency proof between two tree sizes (base64 hashes).",
    ),
    "RecordingAccess": _object({"recording": ref("RecordingTombstone"), **_PAGE}),
}


def _error(status: int, description: str, message: str) -> Json:
    return response(description, ref("SukiError"), example={"code": status, "message": message})


_E = {
    "400": _error(400, "A malformed body or query.", "The body is not JSON."),
    "401": _error(401, "Missing, unknown, revoked or expired API key.", "Invalid API key."),
    "403": _error(
        403,
        "The key is not an admin key (only finding and reading sessions take any key).",
        "This API key may not do that; use a key with the admin role.",
    ),
    "404": _error(404, "No such session or recording in this tenant.", "Session not found."),
    "409": _error(
        409,
        "Deleting: the session is under legal hold, or a live stream is still writing to it. "
        "Holding: the session was deleted, so nothing of it is left to hold.",
        "The session is under legal hold; lift the hold before deleting anything of it.",
    ),
    "413": _error(413, "The body is over 16 KiB.", "request body exceeds the limit"),
    "500": _error(500, "Service failure.", "An internal error occurred."),
    "503": _error(
        503,
        "The access log cannot be written, or the database cannot be reached; nothing was read "
        "or changed.",
        "The access log cannot be written; nothing was served.",
    ),
}
_SESSION_ID = path_param("session_id", "A session id, or a call's SID.")
_RECORDING_ID = path_param("recording_id", "The recording (a ULID).")
_FILTER = {"type": "string", "minLength": 1, "maxLength": 200}
_FILTERS = [
    query_param("actor", "Only records of this credential (token or key id).", _FILTER),
    query_param(
        "action",
        "Only records of this action (any other value is a 400).",
        {"type": "string", "enum": sorted(a.value for a in Action)},
    ),
    query_param("since", "From this time: ISO-8601 or Unix seconds.", _FILTER),
    query_param("until", "Up to this time (not before since): ISO-8601 or Unix seconds.", _FILTER),
    query_param(
        "cursor",
        "The next_cursor of the previous page.",
        {"type": "string", "pattern": "^[0-9]{1,18}$"},
    ),
    query_param("limit", "Records per page.", {"type": "integer", "minimum": 1, "maximum": 1000}),
]


_WHEN = "ISO 8601 (UTC when no zone is given) or Unix seconds."
_LISTING = [
    query_param("created_after", f"Created at or after this time. {_WHEN}", _STR),
    query_param("created_before", f"Created before this time. {_WHEN}", _STR),
    query_param(
        "status",
        "One or more of " + ", ".join(_STATUSES) + ", separated by commas.",
        {"type": "string", "example": "processing,failed"},
    ),
    query_param(
        "kind",
        "One or more of " + ", ".join(_KINDS) + ", separated by commas.",
        {"type": "string", "example": "call"},
    ),
    query_param("external_id", "A call's SID.", {"type": "string", "maxLength": 200}),
    query_param("provider_id", "Suki's provider id.", {"type": "string", "maxLength": 200}),
    query_param("on_hold", "Under legal hold, or not.", {"type": "boolean"}),
    query_param(
        "expiring_before",
        f"With a recording whose audio is kept and whose retention ends before. {_WHEN}",
        _STR,
    ),
    query_param("cursor", "The next_cursor of the previous page.", _STR),
    query_param(
        "limit",
        "Sessions per page (default 50).",
        {"type": "integer", "minimum": 1, "maximum": 500},
    ),
]


def _op(
    method: str,
    operation_id: str,
    summary: str,
    ok: Json,
    errors: str,
    parameters: list[Json],
    body: str | None = None,
) -> Json:
    """An admin operation; ``errors`` lists its error statuses besides 401, 403 and 500."""
    statuses = ["401", "403", "500", *errors.split()]
    return {
        method: operation(
            tag=TAG,
            operation_id=operation_id,
            summary=summary,
            responses={"200": ok, **{status: _E[status] for status in statuses}},
            parameters=parameters,
            request_body=None
            if body is None
            else {"required": True, "content": {JSON: {"schema": ref(body)}}},
            security=BEARER_SCHEME,
        )
    }


def paths() -> Json:
    session = "/api/v1/sessions/{session_id}"
    recording = "/api/v1/recordings/{recording_id}"
    retention_ok = "The new retention; expires_at of every recording is recomputed."
    return {
        "/api/v1/sessions": _op(
            "get",
            "listSessions",
            "Find the tenant's sessions: filtered, newest first, in keyset pages",
            response("A page of sessions.", ref("SessionPage")),
            "400 503",
            _LISTING,
        ),
        f"{session}/recordings": _op(
            "get",
            "listSessionRecordings",
            "The session's recordings, by sequence number, tombstones included",
            response("Its recordings.", ref("SessionRecordings")),
            "404",
            [_SESSION_ID],
        ),
        session: {
            **_op(
                "get",
                "getSessionAdmin",
                "The session, its hold, recordings and tombstones",
                response("The session.", ref("SessionAdmin")),
                "404",
                [_SESSION_ID],
            ),
            **_op(
                "delete",
                "deleteSession",
                "Erase the session's audio now",
                response("What was erased (tombstones).", ref("Deleted")),
                "404 409 503",
                [_SESSION_ID],
            ),
        },
        f"{session}/hold": {
            **_op(
                "put",
                "setHold",
                "Put the session on legal hold (or change its reason)",
                response("The hold.", ref("Hold")),
                "400 404 409 413 503",
                [_SESSION_ID],
                "HoldRequest",
            ),
            **_op(
                "delete",
                "clearHold",
                "Lift the hold; retention resumes",
                response("The session, no longer held.", ref("Hold")),
                "404 503",
                [_SESSION_ID],
            ),
        },
        f"{session}/retention": _op(
            "put",
            "setSessionRetention",
            "Override the tenant's retention for this session",
            response(retention_ok, ref("SessionAdmin")),
            "400 404 409 413 503",
            [_SESSION_ID],
            "RetentionRequest",
        ),
        recording: _op(
            "delete",
            "deleteRecording",
            "Erase one recording's audio now",
            response("Its tombstone.", ref("RecordingTombstone")),
            "404 409 503",
            [_RECORDING_ID],
        ),
        f"{recording}/retention": _op(
            "put",
            "setRecordingRetention",
            "Override the retention of one recording",
            response(retention_ok, ref("RecordingTombstone")),
            "400 404 409 413 503",
            [_RECORDING_ID],
            "RetentionRequest",
        ),
        f"{recording}/access": _op(
            "get",
            "getRecordingAccess",
            "One recording's access history",
            response("The recording and a page of its records.", ref("RecordingAccess")),
            "400 404 503",
            [_RECORDING_ID, *_FILTERS],
        ),
        "/api/v1/audit": _op(
            "get",
            "getAuditLog",
            "The tenant's access log, filtered and paged",
            response("A page of records, oldest first.", ref("AuditPage")),
            "400 503",
            [
                query_param("session_id", "Only records of this session.", _FILTER),
                query_param("recording_id", "Only records of this recording.", _FILTER),
                *_FILTERS,
            ],
        ),
        "/api/v1/audit/{seq}/proof": _op(
            "get",
            "getAuditInclusionProof",
            "Prove one of the tenant's records is in the signed log (RFC 9162)",
            response("The inclusion proof, or pending.", ref("AuditInclusion")),
            "400 404 503",
            [path_param("seq", "The record's seq, as the audit log gives it.", _INT)],
        ),
        "/api/v1/audit/consistency": _op(
            "get",
            "getAuditConsistencyProof",
            "Prove the log only grew between two tree sizes (RFC 9162)",
            response("The consistency proof.", ref("AuditConsistency")),
            "400 503",
            [
                query_param("from", "The older tree size.", _INT, required=True),
                query_param("to", "The newer tree size (default: the newest signed).", _INT),
            ],
        ),
    }


SECTION = Section(
    tag={
        "name": TAG,
        "description": (
            "Finding sessions, legal holds, retention, deletion and the tamper-evident access "
            "log. Credential: a workspace API key as Bearer; any key finds and reads sessions "
            "and their recordings, everything else needs the admin role. Times are ISO 8601 "
            "UTC with milliseconds. Errors in the {code, message} shape; any other method on "
            "these paths answers 405 with Allow."
        ),
    },
    paths=paths(),
    schemas=SCHEMAS,
)
