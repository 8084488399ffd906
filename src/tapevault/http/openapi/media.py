"""The media gateway: what every signed URL the dialects hand out points at (``http/media.py``).

No credential but the URL itself: its query (mode, expiry, partner, key id, signature) is an
HMAC over the resource, so the parameters are documented as the strings they must look like and
any other value answers 403. Errors are JSON that say what to do next (``MediaError``).
"""

from __future__ import annotations

from tapevault.http.openapi import byteranges
from tapevault.http.openapi.common import (
    BINARY,
    JSON,
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
)

TAG = "Media"

SCHEMAS: Json = {
    "MediaError": {
        "type": "object",
        "required": ["code", "error", "message"],
        "properties": {
            "code": {"type": "integer"},
            "error": {
                "type": "string",
                "description": "url_invalid, url_expired, not_found, internal...",
            },
            "message": {"type": "string", "description": "What happened and what to do."},
        },
    },
    "MediaGoneError": {
        "allOf": [
            ref("MediaError"),
            {
                "type": "object",
                "required": ["reason", "at"],
                "properties": {
                    "reason": {"type": "string", "enum": ["expired", "deleted"]},
                    "at": {"type": "integer", "description": "Unix seconds it went."},
                    "policy": nullable(
                        {"type": "string", "description": "tenant, session, recording or request."}
                    ),
                },
            },
        ]
    },
}

_TOKEN = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}


def _signed_query(modes: list[str]) -> list[Json]:
    """The signed query string, exactly as the URL carries it."""
    return [
        query_param(
            "m",
            "Mode: s stream, d download, j metadata, p waveform peaks.",
            {"type": "string", "enum": modes},
            required=True,
        ),
        query_param(
            "e",
            "Expiry, Unix seconds.",
            {"type": "string", "pattern": "^[0-9]{1,12}$"},
            required=True,
        ),
        query_param("p", "The partner that signed.", _TOKEN, required=True),
        query_param("k", "The signing key's id.", _TOKEN, required=True),
        query_param(
            "s",
            "HMAC-SHA256 signature, base64url.",
            {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"},
            required=True,
        ),
    ]


def _error(description: str, schema: str = "MediaError") -> Json:
    return response(description, ref(schema))


_E403 = _error("The URL expired or was altered (error says which): ask for a new one.")
_E500 = _error("Service failure.")
_E503 = _error(
    "The access log cannot be written (error audit_unavailable), or the database cannot be "
    "reached (database_unavailable); nothing was served."
)
_E410 = _error("Past retention, or deleted; never retry.", "MediaGoneError")
_DISPOSITION = {"Content-Disposition": header("attachment; filename=...: download URLs only.")}


def _audio() -> Json:
    get = operation(
        tag=TAG,
        operation_id="getMedia",
        summary="Stream or download a recording through its signed URL",
        description=(
            "The presigned_url, fileUrl, inbound_url and outbound_url of the dialects. "
            "Honours Range (single, multiple, suffix), If-Range and the conditional headers. "
            "Download URLs (m=d) add Content-Disposition: attachment."
        ),
        parameters=[
            path_param("recording_id", "The recording (a ULID)."),
            *_signed_query(["s", "d"]),
            *byteranges.REQUEST_HEADERS,
        ],
        responses={
            "200": response(
                "The whole file.",
                headers={**byteranges.REPRESENTATION, **_DISPOSITION},
                content={"audio/wav": {"schema": BINARY}},
            ),
            **byteranges.ranged_responses("audio/wav", extra=_DISPOSITION),
            "403": _E403,
            "404": _error("No such recording (or not servable)."),
            "410": _E410,
            "500": _E500,
            "503": _E503,
        },
    )
    return {"get": get, "head": head_of(get, "headMedia", "Recording headers")}


def _document() -> Json:
    get = operation(
        tag=TAG,
        operation_id="getCallMetadataDocument",
        summary="A call's metadata document through its signed URL",
        description="Amigo's metadata_url: the call's RecordingMetadataResponse, as a file.",
        parameters=[
            path_param("session_id", "The call's session (not its SID)."),
            *_signed_query(["j"]),
            *byteranges.REQUEST_HEADERS,
        ],
        responses={
            "200": response(
                "The document.",
                ref("RecordingMetadataResponse"),
                headers=byteranges.REPRESENTATION,
            ),
            **byteranges.ranged_responses(JSON),
            "403": _E403,
            "404": _error("No such call, or no audio of it is available."),
            "410": _E410,
            "500": _E500,
            "503": _E503,
        },
    )
    return {"get": get, "head": head_of(get, "headCallMetadataDocument", "Document headers")}


def _peaks() -> Json:
    get = operation(
        tag=TAG,
        operation_id="getWaveformPeaks",
        summary="A recording's waveform peaks through its signed URL",
        description=(
            "Min/max per block of samples in BBC audiowaveform's JSON layout (version 2, one "
            "channel, 8 bits), which peaks.js (waveform-data.js) and wavesurfer.js take as they "
            "are. The same checks as the audio; spp is not signed (every resolution is a view "
            "of the resource the URL grants)."
        ),
        parameters=[
            path_param("recording_id", "The recording (a ULID)."),
            *_signed_query(["p"]),
            query_param(
                "spp",
                "Samples per pixel; default: the coarsest giving at least 1000 pixels.",
                {"type": "string", "enum": ["256", "2048", "16384"]},
            ),
            *byteranges.REQUEST_HEADERS,
        ],
        responses={
            "200": response(
                "The peaks.",
                {
                    "type": "object",
                    "required": [
                        "version",
                        "channels",
                        "sample_rate",
                        "samples_per_pixel",
                        "bits",
                        "length",
                        "data",
                    ],
                    "properties": {
                        "version": {"type": "integer", "enum": [2]},
                        "channels": {"type": "integer", "enum": [1]},
                        "sample_rate": {"type": "integer"},
                        "samples_per_pixel": {"type": "integer"},
                        "bits": {"type": "integer", "enum": [8]},
                        "length": {"type": "integer", "description": "Pixels."},
                        "data": {
                            "type": "array",
                            "items": {"type": "integer", "minimum": -128, "maximum": 127},
                            "description": "min0, max0, min1, max1, ... (2 x length values).",
                        },
                    },
                },
                headers=byteranges.REPRESENTATION,
            ),
            **byteranges.ranged_responses(JSON),
            "400": _error("spp is not one of the resolutions."),
            "403": _E403,
            "404": _error("No such recording, or its peaks are not computed (yet)."),
            "410": _E410,
            "500": _E500,
            "503": _E503,
        },
    )
    return {"get": get, "head": head_of(get, "headWaveformPeaks", "Peaks headers")}


SECTION = Section(
    tag={
        "name": TAG,
        "description": (
            "Signed media URLs (CORS-enabled for browser players). Any method but GET, HEAD "
            "and OPTIONS answers 405 with Allow."
        ),
    },
    paths={
        "/media/{recording_id}.wav": _audio(),
        "/media/{recording_id}.peaks.json": _peaks(),
        "/media/{session_id}.json": _document(),
    },
    schemas=SCHEMAS,
)
