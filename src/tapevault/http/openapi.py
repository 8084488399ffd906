"""The OpenAPI 3.0 document served at ``/openapi.json``.

Written by hand rather than generated, because the Suki schemas must be the seed's own
(``controllers.*`` in suki-form-filling-session-recording.md) name for name, and because the
endpoints are raw ASGI for speed and have no framework models to generate from.
"""

from __future__ import annotations

from typing import Any

from tapevault import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, schema: str, code: int, message: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": _ref(schema),
                "example": {"code": code, "message": message},
            }
        },
    }


_TOKEN = {"$ref": "#/components/parameters/SukiTokenHeader"}
_PROVIDER = {"$ref": "#/components/parameters/ProviderIdHeader"}
_SESSION_ID = {
    "name": "ambient_session_id",
    "in": "path",
    "required": True,
    "description": "Unique identifier for the ambient (or form-filling) session.",
    "schema": {"type": "string"},
}
_E401 = _error(
    "Expired or missing token.",
    "controllers.AuthenticationError",
    401,
    "Invalid authentication credentials.",
)
_E404 = _error(
    "Session unknown to this partner, or no finished recording yet.",
    "controllers.NotFoundError",
    404,
    "Recording not found or decryption in progress.",
)
_E500 = _error(
    "Service failure.", "controllers.InternalServerError", 500, "An internal error occurred."
)
_E400 = _error("Bad Request", "controllers.BadRequestError", 400, "invalid request")


def _create_op(summary: str, operation_id: str) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["sessions"],
            "summary": summary,
            "operationId": operation_id,
            "parameters": [_TOKEN, _PROVIDER],
            "responses": {
                "201": {
                    "description": "Session created",
                    "content": {"application/json": {"schema": _ref("CreateSessionResponse")}},
                },
                "401": _E401,
                "500": _E500,
            },
        }
    }


def openapi_document(public_url: str) -> dict[str, Any]:
    session_ok = {
        "description": "The session and its recordings",
        "content": {"application/json": {"schema": _ref("SessionResponse")}},
    }
    return {
        "openapi": "3.0.1",
        "info": {
            "title": "tapevault",
            "version": __version__,
            "description": (
                "Conversation audio vault. Speaks the Suki ambient-session recording API; "
                "signed media URLs support HTTP Range (RFC 9110)."
            ),
        },
        "servers": [{"url": public_url}],
        "paths": {
            "/api/v1/ambient/session/create": _create_op(
                "Create an ambient session", "createAmbientSession"
            ),
            "/api/v1/form-filling/session/create": _create_op(
                "Create a form-filling session", "createFormFillingSession"
            ),
            "/api/v1/ambient/session/{ambient_session_id}": {
                "get": {
                    "tags": ["sessions"],
                    "summary": "Session status and its recordings",
                    "operationId": "getSession",
                    "parameters": [_TOKEN, _SESSION_ID, _PROVIDER],
                    "responses": {"200": session_ok, "401": _E401, "404": _E404, "500": _E500},
                }
            },
            "/api/v1/ambient/session/{ambient_session_id}/audio": {
                "post": {
                    "tags": ["sessions"],
                    "summary": "Upload one recording (a WAV file) to the session",
                    "description": (
                        "Each upload becomes the session's next recording (sequence 1..n). "
                        "PCM 8/16/24-bit, 8-48 kHz, mono or stereo."
                    ),
                    "operationId": "uploadAudio",
                    "parameters": [_TOKEN, _SESSION_ID, _PROVIDER],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "audio/wav": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "Stored",
                            "content": {"application/json": {"schema": _ref("Recording")}},
                        },
                        "400": _E400,
                        "401": _E401,
                        "404": _E404,
                        "409": _error(
                            "The session has ended",
                            "controllers.BadRequestError",
                            409,
                            "The session has ended; it accepts no more audio.",
                        ),
                        "413": _error(
                            "Body too large",
                            "controllers.BadRequestError",
                            413,
                            "request body exceeds the limit",
                        ),
                        "415": _error(
                            "Not a WAV body",
                            "controllers.BadRequestError",
                            415,
                            "Content-Type is not accepted",
                        ),
                        "500": _E500,
                    },
                }
            },
            "/api/v1/ambient/session/{ambient_session_id}/end": {
                "post": {
                    "tags": ["sessions"],
                    "summary": "End the session (idempotent)",
                    "operationId": "endSession",
                    "parameters": [_TOKEN, _SESSION_ID, _PROVIDER],
                    "responses": {"200": session_ok, "401": _E401, "404": _E404, "500": _E500},
                }
            },
            "/api/v1/ambient/session/{ambient_session_id}/recording": {
                "get": {
                    "tags": ["/api/v1/ambient/session"],
                    "summary": "Gets presigned URLs for recordings for the ambient session.",
                    "operationId": "getSessionRecording",
                    "parameters": [
                        _TOKEN,
                        _SESSION_ID,
                        {
                            "name": "download",
                            "in": "query",
                            "required": False,
                            "description": (
                                "If true, returns download-only URLs; if false or omitted, "
                                "URLs support streaming with Range requests."
                            ),
                            "schema": {"type": "boolean"},
                        },
                        _PROVIDER,
                    ],
                    "responses": {
                        "200": {
                            "description": "Success Response",
                            "content": {
                                "application/json": {
                                    "schema": _ref("controllers.SessionRecordingResponse")
                                }
                            },
                        },
                        "400": _E400,
                        "401": _E401,
                        "404": _E404,
                        "410": {
                            "description": "Past the recording retention period.",
                            "content": {
                                "application/json": {
                                    "schema": _ref("controllers.NotFoundError"),
                                    "example": {
                                        "code": 410,
                                        "message": "Recording has expired per retention policy.",
                                    },
                                }
                            },
                        },
                        "500": _E500,
                    },
                }
            },
            "/media/{recording_id}.wav": {
                "get": {
                    "tags": ["media"],
                    "summary": "Stream or download a recording through a signed URL",
                    "description": (
                        "The presigned_url. Honours Range (single, multiple, suffix), If-Range, "
                        "If-None-Match and If-Modified-Since. 403 when the URL is expired or "
                        "altered, 410 past retention."
                    ),
                    "operationId": "getMedia",
                    "parameters": [
                        {
                            "name": "recording_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        *(
                            {
                                "name": n,
                                "in": "query",
                                "required": True,
                                "schema": {"type": "string"},
                            }
                            for n in ("m", "e", "p", "k", "s")
                        ),
                        {
                            "name": "Range",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The whole file",
                            "content": {
                                "audio/wav": {"schema": {"type": "string", "format": "binary"}}
                            },
                        },
                        "206": {"description": "Partial content"},
                        "304": {"description": "Not modified"},
                        "403": {
                            "description": "URL expired or altered",
                            "content": {"application/json": {"schema": _ref("MediaError")}},
                        },
                        "404": {
                            "description": "No such recording",
                            "content": {"application/json": {"schema": _ref("MediaError")}},
                        },
                        "410": {
                            "description": "Past retention",
                            "content": {"application/json": {"schema": _ref("MediaError")}},
                        },
                        "416": {"description": "Range not satisfiable"},
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "operationId": "healthz",
                    "responses": {"200": {"description": "OK"}},
                }
            },
        },
        "components": {
            "parameters": {
                "SukiTokenHeader": {
                    "name": "sdp_suki_token",
                    "in": "header",
                    "required": True,
                    "description": "Partner JWT (HS256 or RS256); partner_id is in its claims.",
                    "schema": {"type": "string"},
                },
                "ProviderIdHeader": {
                    "name": "sdp_provider_id",
                    "in": "header",
                    "required": False,
                    "description": "Unique identifier for the provider; recorded with the access.",
                    "schema": {"type": "string", "example": "provider-123"},
                },
            },
            "schemas": {
                "controllers.SessionRecordingResponse": {
                    "type": "object",
                    "properties": {
                        "recordings": {
                            "type": "array",
                            "items": _ref("controllers.RecordingItem"),
                        },
                        "is_streamable": {"type": "boolean", "example": True},
                    },
                },
                "controllers.RecordingItem": {
                    "type": "object",
                    "properties": {
                        "recording_id": {"type": "string"},
                        "presigned_url": {"type": "string"},
                        "expires_at": {"type": "integer"},
                        "sequence_number": {"type": "integer"},
                    },
                },
                **{
                    name: {
                        "type": "object",
                        "properties": {
                            "code": {"type": "integer", "example": code},
                            "message": {"type": "string", "example": msg},
                        },
                    }
                    for name, code, msg in (
                        ("controllers.BadRequestError", 400, "invalid request"),
                        ("controllers.AuthenticationError", 401, "invalid token"),
                        ("controllers.NotFoundError", 404, "not found"),
                        ("controllers.InternalServerError", 500, "internal server error"),
                    )
                },
                "CreateSessionResponse": {
                    "type": "object",
                    "required": ["ambient_session_id"],
                    "properties": {"ambient_session_id": {"type": "string"}},
                },
                "Recording": {
                    "type": "object",
                    "properties": {
                        "recording_id": {"type": "string"},
                        "sequence_number": {"type": "integer"},
                        "status": {"type": "string"},
                        "duration_ms": {"type": "integer"},
                        "sample_rate": {"type": "integer"},
                        "channels": {"type": "integer"},
                        "bits_per_sample": {"type": "integer"},
                        "bytes": {"type": "integer"},
                        "sha256": {"type": "string"},
                        "created_at": {"type": "integer"},
                        "expires_at": {"type": "integer"},
                    },
                },
                "SessionResponse": {
                    "type": "object",
                    "properties": {
                        "ambient_session_id": {"type": "string"},
                        "kind": {"type": "string", "enum": ["ambient", "form_filling"]},
                        "status": {
                            "type": "string",
                            "enum": ["created", "in_progress", "completed"],
                        },
                        "created_at": {"type": "integer"},
                        "ended_at": {"type": "integer", "nullable": True},
                        "recordings": {"type": "array", "items": _ref("Recording")},
                    },
                },
                "MediaError": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "integer"},
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "reason": {"type": "string"},
                        "at": {"type": "integer"},
                    },
                },
            },
        },
    }
