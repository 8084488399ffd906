"""The Kore.ai dialect: fetch call recording v2 (kore-fetch-call-recording-v2.md).

The seed is a web page, not an OpenAPI document, so its table is transcribed: the path, the
``auth`` header, ``sessionId`` and ``userId``, and the recording statuses. The server adds a
``failed`` status with a ``message``, Retry-After on the two "in progress" statuses, and Kore's
platform error shape ``{"errors": [{"msg", "code"}]}`` for request errors (``http/kore.py``).
"""

from __future__ import annotations

from tapevault.http.openapi.common import (
    KORE_SCHEME,
    RETRY_AFTER,
    Json,
    Section,
    operation,
    path_param,
    query_param,
    ref,
    response,
)

TAG = "Kore"

SCHEMAS: Json = {
    "KoreRecordingResponse": {
        "type": "object",
        "required": ["status", "recording"],
        "properties": {
            "status": {
                "type": "string",
                "enum": [
                    "success",
                    "media_unavailable",
                    "call_in_progress",
                    "media_in_progress",
                    "failed",
                ],
                "description": (
                    "success: the URL is generated; media_unavailable: no such session, no "
                    "audio, or past retention; call_in_progress: audio is still arriving; "
                    "media_in_progress: the call ended and the media is being made; failed: "
                    "processing failed (message says why)."
                ),
            },
            "recording": {
                "type": "array",
                "description": "One entry, the session's merged file, when status is success.",
                "items": {
                    "type": "object",
                    "required": ["fileName", "fileUrl"],
                    "properties": {
                        "fileName": {"type": "string", "example": "CA1234-merged.wav"},
                        "fileUrl": {"type": "string", "description": "A signed media URL."},
                    },
                },
            },
            "message": {"type": "string", "description": "Why, when status is failed."},
        },
    },
    "KoreErrors": {
        "type": "object",
        "required": ["errors"],
        "properties": {
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["msg", "code"],
                    "properties": {"msg": {"type": "string"}, "code": {"type": "integer"}},
                },
            }
        },
    },
}


def _error(description: str, status: int, message: str) -> Json:
    return response(
        description, ref("KoreErrors"), example={"errors": [{"msg": message, "code": status}]}
    )


def paths() -> Json:
    return {
        "/api/public/bot/{bot_id}/v2/recordings": {
            "get": operation(
                tag=TAG,
                operation_id="fetchCallRecordingV2",
                summary="Fetch Call Recording (Version 2)",
                description=(
                    "The session's recording as one file: every channel or segment mixed on "
                    "one timeline, behind a signed URL. Every recording status is a 200 whose "
                    "body says it; Retry-After says when to ask again."
                ),
                parameters=[
                    path_param("bot_id", "botId or streamId (the app's bot_id)."),
                    query_param(
                        "sessionId",
                        "The session: an ambient or form-filling session id, or a call's SID.",
                        {"type": "string"},
                        required=True,
                    ),
                    query_param(
                        "userId",
                        "The user whose conversation it is; recorded with the access.",
                        {"type": "string"},
                    ),
                ],
                responses={
                    "200": response(
                        "The recording's status, and its URL when ready.",
                        ref("KoreRecordingResponse"),
                        headers={"Retry-After": RETRY_AFTER},
                    ),
                    "400": _error("sessionId is missing.", 400, "sessionId is required."),
                    "401": _error("Missing or invalid JWT.", 401, "Invalid auth token."),
                    "404": _error("The bot_id is not the app's.", 404, "Bot not found."),
                    "500": _error("Service failure.", 500, "Internal error."),
                    "503": _error(
                        "The access log cannot be written; no URL was issued.",
                        503,
                        "The access log cannot be written; nothing was served.",
                    ),
                },
                security=KORE_SCHEME,
            )
        }
    }


SECTION = Section(
    tag={
        "name": TAG,
        "description": (
            "Kore.ai SmartAssist call recordings (kore-fetch-call-recording-v2.md). Credential: "
            "the app's JWT (HS256 with its client secret, appId claim) in the auth header. Any "
            "other method answers 405 in the same error shape."
        ),
    },
    paths=paths(),
    schemas=SCHEMAS,
)
