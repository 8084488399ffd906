"""The Suki dialect: ambient and form-filling sessions and their recording URLs.

``getSessionRecording`` is the seed's operation (suki-form-filling-session-recording.md) with its
parameters and ``controllers.*`` schemas copied name for name, so that a client generated from the
seed and one generated from this document agree. The session operations around it are tapevault's
own (the seed only links to them); every one answers errors in the seed's ``{"code", "message"}``
shape (``http/errors.py``), and past retention adds ``reason`` and ``at``.
"""

from __future__ import annotations

from collections.abc import Iterable

from tapevault.http.openapi.common import (
    JSON,
    RETRY_AFTER,
    SUKI_SCHEME,
    Json,
    Section,
    nullable,
    operation,
    parameter_ref,
    ref,
    response,
    upload_body,
    with_headers,
)
from tapevault.ingest.decode import ACCEPTED_CONTENT_TYPES

TAG = "Suki"

# --- the seed's own definitions, verbatim ---------------------------------------------------------

TOKEN: Json = {
    "name": "sdp_suki_token",
    "in": "header",
    "description": (
        "Suki-issued JWT; partner_id is read from token claims for recording access metrics."
    ),
    "required": True,
    "schema": {"type": "string"},
}
SESSION_ID: Json = {
    "name": "ambient_session_id",
    "in": "path",
    "description": "Unique identifier for the ambient session.",
    "required": True,
    "schema": {"type": "string"},
}
DOWNLOAD: Json = {
    "name": "download",
    "in": "query",
    "description": (
        "If true, returns download-only URLs; if false or omitted, URLs support streaming with "
        "Range requests."
    ),
    "required": False,
    "schema": {"type": "boolean"},
}
PROVIDER = parameter_ref("ProviderIdHeader")
PARAMETERS: Json = {
    "ProviderIdHeader": {
        "name": "sdp_provider_id",
        "in": "header",
        "description": (
            "Unique identifier for the provider. Optional for standard partners. **Required** "
            "for Single Auth Token authentication, where multiple providers share the same "
            "`partner_token`."
        ),
        "required": False,
        "schema": {"type": "string", "example": "provider-123"},
    }
}


def _code_message(description: str, code: int, message: str) -> Json:
    return {
        "type": "object",
        "properties": {
            "code": {"type": "integer", "example": code},
            "message": {"type": "string", "example": message},
        },
        "description": description,
    }


SEED_SCHEMAS: Json = {
    "controllers.SessionRecordingResponse": {
        "type": "object",
        "properties": {
            "recordings": {
                "type": "array",
                "description": "List of recordings with presigned URLs for the ambient session.",
                "items": ref("controllers.RecordingItem"),
            },
            "is_streamable": {
                "type": "boolean",
                "description": "Whether the returned URLs support streaming with Range requests.",
                "example": True,
            },
        },
        "description": "Response body for the /session/{ambient_session_id}/recording endpoint",
    },
    "controllers.BadRequestError": _code_message("Bad Request Response", 400, "invalid request"),
    "controllers.AuthenticationError": _code_message(
        "Authentication Failure Response", 401, "invalid token"
    ),
    "controllers.NotFoundError": _code_message("Not Found Response", 404, "not found"),
    "controllers.InternalServerError": _code_message(
        "Internal Server Error Response", 500, "internal server error"
    ),
    "controllers.RecordingItem": {
        "type": "object",
        "properties": {
            "recording_id": {
                "type": "string",
                "description": "Unique identifier for the recording.",
                "example": "01KFJZTJWZH28GRHQXVCGW4Y47",
            },
            "presigned_url": {
                "type": "string",
                "description": "Temporary URL to stream or download the recording.",
                "example": "https://storage.googleapis.com/...",
            },
            "expires_at": {
                "type": "integer",
                "description": "Unix timestamp when the presigned URL expires.",
                "example": 1738765432,
            },
            "sequence_number": {
                "type": "integer",
                "description": "Order or part index of the recording.",
                "example": 1,
            },
        },
        "description": "A single recording entry with presigned URL and metadata",
    },
}

# --- tapevault's own shapes -----------------------------------------------------------------------

_INT = {"type": "integer"}
_STR = {"type": "string"}
_RECORDING: Json = {
    "recording_id": {"type": "string", "description": "A ULID."},
    "sequence_number": _INT,
    "status": {
        "type": "string",
        "enum": ["receiving", "processing", "available", "failed", "expired", "deleted"],
        "description": "expired and deleted are tombstones: the audio is gone.",
    },
    "duration_ms": _INT,
    "sample_rate": _INT,
    "channels": _INT,
    "bits_per_sample": _INT,
    "bytes": _INT,
    "sha256": nullable(_STR),
    "source_format": {"type": "string", "description": "e.g. wav/pcm_s16le, mp3."},
    "recovered": {"type": "boolean"},
    "failure_reason": nullable(_STR),
    "channel": nullable({"type": "string", "description": "inbound or outbound."}),
    "media_start_epoch_ms": nullable(_INT),
    "created_at": {"type": "integer", "description": "Unix seconds."},
    "expires_at": {"type": "integer", "description": "End of retention, Unix seconds."},
}
_SESSION: Json = {
    "ambient_session_id": _STR,
    "kind": {"type": "string", "enum": ["ambient", "form_filling", "call"]},
    "external_id": nullable({"type": "string", "description": "A call's SID."}),
    "status": {
        "type": "string",
        "enum": ["created", "in_progress", "processing", "completed", "failed"],
    },
    "created_at": _INT,
    "ended_at": nullable(_INT),
    "recordings": {"type": "array", "items": ref("Recording")},
}
NATIVE_SCHEMAS: Json = {
    "SukiError": {
        "type": "object",
        "description": "The seed's error shape, for the statuses the seed does not list.",
        "required": ["code", "message"],
        "properties": {"code": _INT, "message": _STR},
    },
    "SukiGoneError": {
        "description": "410: past retention (or deleted); never retry.",
        "allOf": [
            ref("controllers.NotFoundError"),
            {
                "type": "object",
                "required": ["code", "message", "reason", "at"],
                "properties": {
                    "reason": {"type": "string", "enum": ["expired", "deleted"]},
                    "at": {"type": "integer", "description": "Unix seconds it went."},
                    "policy": nullable(
                        {
                            "type": "string",
                            "description": "The rule that removed it: the retention level "
                            "(tenant, session, recording) or request (a deletion).",
                        }
                    ),
                },
            },
        ],
    },
    "CreateSessionResponse": {
        "type": "object",
        "required": ["ambient_session_id"],
        "properties": {
            "ambient_session_id": {
                "type": "string",
                "description": "A UUID; form-filling ids start with ffs-.",
            }
        },
    },
    "Recording": {
        "type": "object",
        "description": "One recording; its audio facts are read from the stored file.",
        "required": list(_RECORDING),
        "properties": _RECORDING,
    },
    "SessionResponse": {
        "type": "object",
        "required": list(_SESSION),
        "properties": _SESSION,
    },
    "StreamTicketResponse": {
        "type": "object",
        "required": ["ticket", "expires_at"],
        "properties": {
            "ticket": {"type": "string", "description": "Single use; pass as ?ticket=."},
            "expires_at": {"type": "integer", "description": "Unix seconds (one minute)."},
        },
    },
}

# --- responses ------------------------------------------------------------------------------------


def _error(status: int, description: str, message: str, schema: str = "SukiError") -> Json:
    return response(description, ref(schema), example={"code": status, "message": message})


E400 = _error(400, "Bad Request", "invalid request", "controllers.BadRequestError")
E401 = _error(
    401,
    "Expired or missing token. User message returned in the response body.",
    "Invalid authentication credentials.",
    "controllers.AuthenticationError",
)
E404_SESSION = _error(
    404, "No such session for this partner.", "Session not found.", "controllers.NotFoundError"
)
E413 = _error(413, "The body is over the size limit.", "request body exceeds the limit")
E507 = _error(
    507,
    "Nothing was kept: the server's disk is full (with Retry-After), or the partner's storage "
    "quota is used up.",
    "The storage quota of 53687091200 bytes is used up",
)
E500 = _error(
    500,
    "Service failure. User message returned in the response body.",
    "An internal error occurred.",
    "controllers.InternalServerError",
)
E409_ENDED = _error(
    409,
    "The session has ended, or its audio was deleted.",
    "The session has ended; it accepts no more audio.",
)
E503_AUDIT = _error(
    503,
    "The access log cannot be written; nothing was served.",
    "The access log cannot be written; nothing was served.",
)
GONE = response(
    "Session is past the recording retention period (7 days), or its audio was deleted. User "
    "message returned in the response body, with reason, at and policy.",
    ref("SukiGoneError"),
    example={
        "code": 410,
        "message": "Recording has expired per retention policy.",
        "reason": "expired",
        "at": 1738765432,
        "policy": "tenant",
    },
)
_SESSION_OK = response("The session and its recordings.", ref("SessionResponse"))
_BASE = (TOKEN, SESSION_ID, PROVIDER)


def _op(
    operation_id: str,
    summary: str,
    responses: dict[str, Json],
    *,
    description: str | None = None,
    parameters: Iterable[Json] = _BASE,
    request_body: Json | None = None,
) -> Json:
    """A Suki operation: the token, and the 401 and 500 every one of them can answer."""
    return operation(
        tag=TAG,
        operation_id=operation_id,
        summary=summary,
        responses={"401": E401, "500": E500, **responses},
        description=description,
        parameters=parameters,
        request_body=request_body,
        security=SUKI_SCHEME,
    )


def _create(operation_id: str, kind: str) -> Json:
    return {
        "post": _op(
            operation_id,
            f"Create {kind} session",
            {
                "201": response("Session created.", ref("CreateSessionResponse")),
                "413": E413,
            },
            description="Takes no body: one is read and ignored, or refused (413) past 64 KiB.",
            parameters=[TOKEN, PROVIDER],
        )
    }


def _recording() -> Json:
    """The seed's operation: its texts and parameters, plus what tapevault adds to its answers."""
    return {
        "get": _op(
            "getSessionRecording",
            "Gets presigned URLs for recordings for the ambient session.",
            {
                "200": {
                    "description": "Success Response",
                    "content": {
                        JSON: {
                            "schema": ref("controllers.SessionRecordingResponse"),
                            "example": {
                                "recordings": [
                                    {
                                        "recording_id": "01KFJZTJWZH28GRHQXVCGW4Y47",
                                        "presigned_url": "https://storage.googleapis.com/...",
                                        "expires_at": 1738765432,
                                        "sequence_number": 1,
                                    }
                                ],
                                "is_streamable": True,
                            },
                        }
                    },
                },
                "400": E400,
                "404": with_headers(
                    _error(
                        404,
                        "Session exists, but recording audio is missing or not yet available "
                        "(Retry-After says when to ask again), or no such session.",
                        "Recording not found or decryption in progress.",
                        "controllers.NotFoundError",
                    ),
                    **{"Retry-After": RETRY_AFTER},
                ),
                "410": GONE,
                "503": E503_AUDIT,
            },
            description=(
                "Returns presigned URLs for all recordings (SSP sessions) for the ambient "
                "session. Supports streaming (Range header) and download modes; use query "
                "param download=true for download-only URLs. Authentication: sdp_suki_token is "
                "required. The partner_id is derived from the token's JWT claims and is used "
                "for recording access attribution and metrics (e.g. usage/analytics); ensure "
                "the token was issued with the correct partner identity"
            ),
            parameters=[TOKEN, SESSION_ID, DOWNLOAD, PROVIDER],
        )
    }


_STREAM_TICKET_DESCRIPTION = (
    "For browsers, which cannot set headers on a WebSocket: the ticket opens "
    "WS /api/v1/ambient/session/{ambient_session_id}/stream?ticket=... once, within a minute "
    "(servers send sdp_suki_token on the WebSocket request instead). The stream takes "
    "encoding (pcm_s16le, pcm_mulaw, pcm_alaw), sample_rate (8000-48000) and channels (1, 2) "
    "as query parameters and binary frames of audio; it becomes the session's next recording. "
    'The server acknowledges with text messages {"type":"ack","bytes":N,"stored":M}: the first '
    "N bytes are durable on the server's disk, and the first M of them also in the object store "
    "(they survive the loss of that server; resume from M when you cannot tell)."
)


def paths() -> Json:
    session = "/api/v1/ambient/session/{ambient_session_id}"
    return {
        "/api/v1/ambient/session/create": _create("createAmbientSession", "an ambient"),
        "/api/v1/form-filling/session/create": _create(
            "createFormFillingSession", "a form-filling"
        ),
        session: {
            "get": _op(
                "getSession",
                "Session status and its recordings",
                {"200": _SESSION_OK, "404": E404_SESSION},
            )
        },
        f"{session}/audio": {
            "post": _op(
                "uploadAudio",
                "Upload one recording to the session",
                {
                    "202": response(
                        "Accepted: stored durably and being processed (status processing); "
                        "GET the session to see it become available.",
                        ref("Recording"),
                    ),
                    "400": E400,
                    "404": E404_SESSION,
                    "409": E409_ENDED,
                    "413": E413,
                    "415": _error(
                        415, "Not a media type or format tapevault takes.", "unsupported media"
                    ),
                    "507": E507,
                },
                description=(
                    "Each upload becomes the session's next recording (sequence 1..n). WAV, "
                    "MP3, FLAC, Ogg (Opus/Vorbis), WebM (Opus) or M4A (AAC); stored as PCM WAV."
                ),
                request_body=upload_body(ACCEPTED_CONTENT_TYPES, "The audio file."),
            )
        },
        f"{session}/end": {
            "post": _op(
                "endSession",
                "End the session (idempotent)",
                {"200": _SESSION_OK, "404": E404_SESSION, "413": E413},
            )
        },
        f"{session}/stream-ticket": {
            "post": _op(
                "createStreamTicket",
                "A single-use ticket to stream audio from a browser",
                {
                    "201": response("The ticket.", ref("StreamTicketResponse")),
                    "404": E404_SESSION,
                    "409": E409_ENDED,
                    "413": E413,
                },
                description=_STREAM_TICKET_DESCRIPTION,
            )
        },
        f"{session}/recording": _recording(),
    }


SECTION = Section(
    tag={
        "name": TAG,
        "description": (
            "Suki Developer Platform sessions and recording URLs "
            "(suki-form-filling-session-recording.md). Credential: the sdp_suki_token header. "
            "Any other method on these paths answers 405 with Allow, in the same error shape."
        ),
    },
    paths=paths(),
    schemas={**SEED_SCHEMAS, **NATIVE_SCHEMAS},
    parameters=PARAMETERS,
)
