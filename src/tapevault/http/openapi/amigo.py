"""The Amigo dialect: call recordings by workspace and call SID, and workspace API keys.

The three recording operations are the seed's (amigo-recordings-api.md): operationIds,
parameters and the schemas ``RecordingUrlsResponse``, ``RecordingMetadataResponse``,
``HTTPValidationError`` and ``ValidationError`` name for name. Added is what the seed leaves out
but the server does (``http/amigo.py``): the 401 every operation can answer, FastAPI's
``{"detail": "..."}`` bodies on the seed's bare 4xx/5xx, Retry-After while audio is being
prepared, and a download that is ``audio/wav`` for the two channels and honours Range. Then the
native extensions: uploading a call's channels and managing the workspace's API keys.
"""

from __future__ import annotations

from tapevault.http.openapi import byteranges
from tapevault.http.openapi.common import (
    BEARER_SCHEME,
    BINARY,
    JSON,
    RETRY_AFTER,
    UUID,
    Json,
    Section,
    head_of,
    header,
    nullable,
    operation,
    path_param,
    query_param,
    ref,
    response,
    upload_body,
    with_headers,
)
from tapevault.ingest.decode import ACCEPTED_CONTENT_TYPES

TAG = "Amigo"

# --- the seed's own definitions, verbatim ---------------------------------------------------------

WORKSPACE_ID: Json = {
    "name": "workspace_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid", "title": "Workspace Id"},
}
CALL_SID: Json = {
    "name": "call_sid",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "title": "Call Sid"},
}
FILENAME: Json = {
    "name": "filename",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "title": "Filename"},
}


def _titled(schema: Json, title: str, description: str) -> Json:
    return {**schema, "title": title, "description": description}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_OPTIONAL_STR = {"anyOf": [_STR, {"type": "null"}]}
_METADATA_FIELDS: list[tuple[str, Json, str, str]] = [
    ("call_sid", _STR, "Call Sid", "Twilio call SID"),
    ("workspace_id", UUID, "Workspace Id", "Workspace that owns this recording"),
    (
        "service_id",
        {"anyOf": [UUID, {"type": "null"}]},
        "Service Id",
        "Service (agent) that handled the call",
    ),
    (
        "direction",
        {"type": "string", "enum": ["inbound", "outbound"]},
        "Direction",
        "Call direction",
    ),
    ("duration_seconds", _NUM, "Duration Seconds", "Total call duration in seconds"),
    ("inbound_format", _STR, "Inbound Format", "Audio format for the inbound (caller) channel"),
    (
        "inbound_sample_rate",
        _INT,
        "Inbound Sample Rate",
        "Sample rate in Hz for the inbound channel",
    ),
    ("outbound_format", _STR, "Outbound Format", "Audio format for the outbound (agent) channel"),
    (
        "outbound_sample_rate",
        _INT,
        "Outbound Sample Rate",
        "Sample rate in Hz for the outbound channel",
    ),
    ("tts_provider", _STR, "Tts Provider", "Text-to-speech provider used for the call"),
    ("call_start_iso", _STR, "Call Start Iso", "Call start time as ISO-8601 string"),
    ("call_end_iso", _STR, "Call End Iso", "Call end time as ISO-8601 string"),
    ("inbound_size_bytes", _INT, "Inbound Size Bytes", "Inbound audio file size in bytes"),
    ("outbound_size_bytes", _INT, "Outbound Size Bytes", "Outbound audio file size in bytes"),
    (
        "media_start_epoch_ms",
        _NUM,
        "Media Start Epoch Ms",
        "Media stream start time as Unix epoch milliseconds",
    ),
]

SEED_SCHEMAS: Json = {
    "RecordingUrlsResponse": {
        "properties": {
            "call_sid": _titled(_STR, "Call Sid", "Twilio call SID"),
            "status": {
                "type": "string",
                "const": "available",
                "title": "Status",
                "description": "Recording availability status",
                "default": "available",
            },
            "inbound_url": _titled(
                _OPTIONAL_STR, "Inbound Url", "Download URL for inbound (caller) audio"
            ),
            "outbound_url": _titled(
                _OPTIONAL_STR, "Outbound Url", "Download URL for outbound (agent) audio"
            ),
            "metadata_url": _titled(
                _OPTIONAL_STR, "Metadata Url", "Download URL for recording metadata JSON"
            ),
        },
        "type": "object",
        "required": ["call_sid"],
        "title": "RecordingUrlsResponse",
        "description": "Download paths for call recording playback.",
    },
    "RecordingMetadataResponse": {
        "properties": {
            name: _titled(schema, title, description)
            for name, schema, title, description in _METADATA_FIELDS
        },
        "type": "object",
        "required": [name for name, *_ in _METADATA_FIELDS if name != "service_id"],
        "title": "RecordingMetadataResponse",
        "description": "Call recording metadata.",
    },
    "HTTPValidationError": {
        "properties": {
            "detail": {
                "items": ref("ValidationError"),
                "type": "array",
                "title": "Detail",
            }
        },
        "type": "object",
        "title": "HTTPValidationError",
    },
    "ValidationError": {
        "properties": {
            "loc": {
                "items": {"anyOf": [_STR, _INT]},
                "type": "array",
                "title": "Location",
            },
            "msg": {"type": "string", "title": "Message"},
            "type": {"type": "string", "title": "Error Type"},
            "input": {"title": "Input"},
            "ctx": {"type": "object", "title": "Context"},
        },
        "type": "object",
        "required": ["loc", "msg", "type"],
        "title": "ValidationError",
    },
}

# --- tapevault's own shapes -----------------------------------------------------------------------

_ISO = {"type": "string", "description": "ISO-8601, milliseconds, UTC."}
_KEY_PROPERTIES: Json = {
    "id": {"type": "string", "description": "The key id, used to revoke it."},
    "prefix": {"type": "string", "description": "The first characters of the key."},
    "name": _STR,
    "role": {"type": "string", "enum": ["admin", "member"]},
    "created_at": _ISO,
    "expires_at": nullable(_ISO),
    "revoked_at": nullable(_ISO),
}
NATIVE_SCHEMAS: Json = {
    "HTTPError": {
        "type": "object",
        "description": "FastAPI's error body.",
        "required": ["detail"],
        "properties": {"detail": {"type": "string"}},
    },
    "CallRecording": {
        "description": "An accepted channel upload: the call, and the recording being processed.",
        "allOf": [
            {"type": "object", "required": ["call_sid"], "properties": {"call_sid": _STR}},
            ref("Recording"),
        ],
    },
    "ApiKey": {
        "type": "object",
        "required": list(_KEY_PROPERTIES),
        "properties": _KEY_PROPERTIES,
    },
    "ApiKeyList": {
        "type": "object",
        "required": ["api_keys"],
        "properties": {"api_keys": {"type": "array", "items": ref("ApiKey")}},
    },
    "ApiKeyCreate": {
        "type": "object",
        "description": "Every field is optional; an empty body makes a member key.",
        "properties": {
            "name": {"type": "string", "maxLength": 200, "default": "api key"},
            "role": {"type": "string", "enum": ["admin", "member"], "default": "member"},
            "expires_in_days": nullable({"type": "integer", "minimum": 1, "maximum": 3650}),
        },
    },
    "ApiKeyCreated": {
        "allOf": [
            ref("ApiKey"),
            {
                "type": "object",
                "required": ["api_key"],
                "properties": {
                    "api_key": {
                        "type": "string",
                        "description": "The key: shown this once, send it as a Bearer token.",
                    }
                },
            },
        ]
    },
}

# --- responses ------------------------------------------------------------------------------------


def _detail(description: str, example: str) -> Json:
    return response(description, ref("HTTPError"), example={"detail": example})


E401 = response(
    "Missing, malformed, unknown, revoked or expired API key.",
    ref("HTTPError"),
    headers={"WWW-Authenticate": header("Bearer", {"const": "Bearer"}, required=True)},
    example={"detail": "Invalid API key."},
)
E403 = _detail(
    "The key is not an admin key.",
    "This API key may not do that; use a key with the admin role.",
)
E422 = response("Validation Error", ref("HTTPValidationError"))
E500 = _detail("Service failure.", "Internal Server Error")
E503 = _detail("Call recording not configured", "Call recording not configured")
E503_RECORDINGS = _detail(
    "Call recording not configured, or the access log cannot be written (nothing was served).",
    "Call recording not configured",
)
E404_RECORDING = with_headers(
    _detail(
        "Recording not found (or another workspace's, or past retention, or deleted); with "
        "Retry-After while its audio is still being processed.",
        "Recording not found",
    ),
    **{"Retry-After": RETRY_AFTER},
)
E404_WORKSPACE = _detail("The path names another workspace.", "Workspace not found")


def _op(
    operation_id: str,
    summary: str,
    responses: dict[str, Json],
    parameters: list[Json],
    *,
    description: str | None = None,
    request_body: Json | None = None,
) -> Json:
    """An Amigo operation: the Bearer key and the 401, 422 and 500 every one can answer."""
    return operation(
        tag=TAG,
        operation_id=operation_id,
        summary=summary,
        responses={"401": E401, "422": E422, "500": E500, **responses},
        description=description,
        parameters=parameters,
        request_body=request_body,
        security=BEARER_SCHEME,
    )


def _recordings() -> Json:
    base = "/v1/{workspace_id}/recordings/{call_sid}"
    seed_errors = {"404": E404_RECORDING, "503": E503_RECORDINGS}
    download = _op(
        "download-recording-file",
        "Download recording file",
        {
            "200": response(
                "Successful Response: audio/wav for inbound.wav and outbound.wav, "
                "application/json (RecordingMetadataResponse) for metadata.json.",
                headers={
                    **byteranges.REPRESENTATION,
                    "Content-Disposition": header("attachment; filename=...", required=True),
                },
                content={
                    "audio/wav": {"schema": BINARY},
                    JSON: {"schema": ref("RecordingMetadataResponse")},
                },
            ),
            **byteranges.ranged_responses("audio/wav", JSON, error=ref("HTTPError")),
            "400": _detail("Invalid filename", "Invalid filename"),
            "503": E503_RECORDINGS,
            "404": with_headers(
                _detail("Recording file not found", "Recording file not found"),
                **{"Retry-After": RETRY_AFTER},
            ),
        },
        [
            WORKSPACE_ID,
            CALL_SID,
            {
                **FILENAME,
                "description": "inbound.wav, outbound.wav or metadata.json; any other is 400.",
            },
            *byteranges.REQUEST_HEADERS,
        ],
        description=(
            "Proxy download a recording file (inbound audio, outbound audio, or metadata) from "
            "UC Volume. Honours Range, If-Range and the conditional headers like the media "
            "gateway."
        ),
    )

    def seed_get(operation_id: str, summary: str, schema: str, description: str) -> Json:
        """A seed GET on one call: its JSON answer, or the seed's 404 and 503."""
        return _op(
            operation_id,
            summary,
            {"200": response("Successful Response", ref(schema)), **seed_errors},
            [WORKSPACE_ID, CALL_SID],
            description=description,
        )

    return {
        f"{base}/urls": {
            "get": seed_get(
                "get-recording-urls",
                "Get recording download paths",
                "RecordingUrlsResponse",
                "Generate download paths for call recording playback. Returns separate paths "
                "for inbound (caller) and outbound (agent) audio channels, plus the recording "
                "metadata file. The URLs are signed and expire after one hour.",
            )
        },
        f"{base}/metadata": {
            "get": seed_get(
                "get-recording-metadata",
                "Get recording metadata",
                "RecordingMetadataResponse",
                "Fetch metadata for a call recording including duration, audio formats, "
                "sample rates, and file sizes.",
            )
        },
        f"{base}/download/{{filename}}": {
            "get": download,
            "head": head_of(download, "head-recording-file", "Recording file headers"),
        },
    }


def _upload() -> Json:
    return {
        "post": _op(
            "upload-call-audio",
            "Upload one channel of a call",
            {
                "202": response(
                    "Accepted: stored durably and being processed; the first upload creates "
                    "the call.",
                    ref("CallRecording"),
                ),
                "400": _detail(
                    "Not audio we read, or an invalid call_sid.",
                    "callSid must be 1-64 letters, digits, '-' or '_'",
                ),
                "404": _detail("The path names another workspace.", "Recording not found"),
                "409": _detail(
                    "That channel of the call already has audio.",
                    "The inbound channel of this call already has audio.",
                ),
                "413": _detail(
                    "The body is over the size limit.", "request body exceeds the limit"
                ),
                "415": _detail("Not a media type or format tapevault takes.", "unsupported media"),
                "503": E503,
                "507": _detail(
                    "Nothing was kept: the server's disk is full (with Retry-After), or the "
                    "workspace's storage quota is used up.",
                    "The storage quota of 53687091200 bytes is used up",
                ),
            },
            [
                WORKSPACE_ID,
                path_param(
                    "call_sid",
                    "The call's id: 1-64 letters, digits, '-' or '_' (else 400).",
                    {"type": "string"},
                ),
                query_param(
                    "channel",
                    "inbound (the caller) or outbound (the agent).",
                    {"type": "string", "enum": ["inbound", "outbound"]},
                    required=True,
                ),
                query_param(
                    "media_start_epoch_ms",
                    "Wall-clock time of the channel's first sample; places it on the call's "
                    "timeline.",
                    {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999},
                ),
                query_param(
                    "direction",
                    "The call's direction (kept with the call).",
                    {"type": "string", "enum": ["inbound", "outbound"]},
                ),
                query_param("service_id", "The service (agent) of the call.", UUID),
                query_param(
                    "tts_provider",
                    "The text-to-speech provider of the call.",
                    {"type": "string", "pattern": "^[A-Za-z0-9_.:/ -]{1,64}$"},
                ),
            ],
            request_body=upload_body(ACCEPTED_CONTENT_TYPES, "The channel's audio file."),
        )
    }


def _keys() -> Json:
    admin = {"403": E403, "404": E404_WORKSPACE}
    return {
        "/v1/{workspace_id}/api-keys": {
            "get": _op(
                "list-api-keys",
                "List the workspace's API keys",
                {"200": response("Every key, revoked ones included.", ref("ApiKeyList")), **admin},
                [WORKSPACE_ID],
            ),
            "post": _op(
                "create-api-key",
                "Create an API key",
                {
                    "201": response("The key, with its secret shown once.", ref("ApiKeyCreated")),
                    "400": _detail(
                        "A name holding a NUL character (length and ranges are 422).",
                        "name must be text of at most 200 characters",
                    ),
                    "413": _detail("The body is over 16 KiB.", "request body exceeds the limit"),
                    **admin,
                },
                [WORKSPACE_ID],
                request_body={
                    "required": False,
                    "content": {JSON: {"schema": ref("ApiKeyCreate")}},
                },
            ),
        },
        "/v1/{workspace_id}/api-keys/{key_id}": {
            "delete": _op(
                "revoke-api-key",
                "Revoke an API key",
                {
                    "204": response("Revoked; it fails from the next request on."),
                    "403": E403,
                    "404": _detail("No such key in this workspace.", "API key not found."),
                },
                [WORKSPACE_ID, path_param("key_id", "The key's id (not the key).")],
            )
        },
    }


SECTION = Section(
    tag={
        "name": TAG,
        "description": (
            "Amigo Platform API call recordings (amigo-recordings-api.md) and workspace API "
            "keys. Credential: Authorization: Bearer <api key>; the key names its workspace, so "
            "a path naming any other workspace answers 404. Errors are FastAPI's shapes; any "
            'other method on these paths answers 405 {"detail": "Method Not Allowed"}.'
        ),
    },
    paths={**_recordings(), "/v1/{workspace_id}/calls/{call_sid}/audio": _upload(), **_keys()},
    schemas={**SEED_SCHEMAS, **NATIVE_SCHEMAS},
)
