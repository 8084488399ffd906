"""Range and conditional requests, shared by every operation that serves stored bytes.

The media gateway and Amigo's proxied download both answer through ``http/ranged.py``
(RFC 9110: preconditions, If-Range, single and multiple ranges), so they take the same request
headers and give the same 206/304/412/416 answers; they are described once, here.
"""

from __future__ import annotations

from tapevault.http.openapi.common import Json, header, header_param, parameter_ref, ref, response

MULTIPART = "multipart/byteranges"
# A single range: ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n``; several are comma separated.
_ONE_RANGE = r"([0-9]{1,7}-[0-9]{0,7}|-[0-9]{1,7})"

PARAMETERS: Json = {
    "Range": header_param(
        "Range",
        "Byte ranges (RFC 9110 §14.2): bytes=a-b, bytes=a-, bytes=-n, or several comma "
        "separated (answered as multipart/byteranges, at most 16). A header that is not valid "
        "range syntax is ignored (the whole file, 200).",
        {"type": "string", "pattern": f"^bytes={_ONE_RANGE}(, ?{_ONE_RANGE}){{0,3}}$"},
    ),
    "IfRange": header_param(
        "If-Range",
        "A strong ETag or the Last-Modified date: the Range is honoured only if it still names "
        "this representation, else the whole file is sent.",
        {"type": "string"},
    ),
    "IfMatch": header_param(
        "If-Match",
        "Entity tags; none matching (strong comparison) answers 412.",
        {"type": "string"},
    ),
    "IfNoneMatch": header_param(
        "If-None-Match", "Entity tags; one matching answers 304.", {"type": "string"}
    ),
    "IfModifiedSince": header_param(
        "If-Modified-Since", "An HTTP-date; not modified since answers 304.", {"type": "string"}
    ),
    "IfUnmodifiedSince": header_param(
        "If-Unmodified-Since", "An HTTP-date; modified since answers 412.", {"type": "string"}
    ),
}
REQUEST_HEADERS = [parameter_ref(name) for name in PARAMETERS]

SCHEMAS: Json = {
    "RangeError": {
        "type": "object",
        "description": "A precondition (412) or range (416) refusal of a byte-serving endpoint.",
        "required": ["code", "message"],
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
    }
}

_ETAG = header("Strong entity tag of the stored bytes (they never change).", required=True)
_LAST_MODIFIED = header("When the bytes were stored (IMF-fixdate).", required=True)
_ACCEPT_RANGES = header("Always bytes.", {"type": "string", "const": "bytes"}, required=True)
VALIDATORS = {"ETag": _ETAG, "Last-Modified": _LAST_MODIFIED}
REPRESENTATION = {"Accept-Ranges": _ACCEPT_RANGES, **VALIDATORS}


def partial(media_types: tuple[str, ...], extra: dict[str, Json] | None = None) -> Json:
    """206 for a representation of one of ``media_types``: one range in that type, several as
    multipart/byteranges.

    No schema: a part of a JSON document is not JSON.
    """
    return response(
        "Partial content: one range (Content-Range says which), or several as "
        "multipart/byteranges with a Content-Range per part.",
        headers={
            **REPRESENTATION,
            "Content-Range": header("bytes a-b/length; absent on a multipart answer."),
            **(extra or {}),
        },
        content={**{media_type: {} for media_type in media_types}, MULTIPART: {}},
    )


NOT_MODIFIED = response(
    "Not modified: If-None-Match or If-Modified-Since matched. No body.", headers=VALIDATORS
)


def ranged_responses(
    *media_types: str, extra: dict[str, Json] | None = None, error: Json | None = None
) -> dict[str, Json]:
    """The answers a byte-serving endpoint gives besides its 200 and its own errors; ``error``
    is the schema of its 412 and 416 bodies (the dialect's error shape; tapevault's by default)."""
    error = error or ref("RangeError")
    return {
        "206": partial(media_types, extra),
        "304": NOT_MODIFIED,
        "412": response("If-Match or If-Unmodified-Since failed.", error, headers=REPRESENTATION),
        "416": response(
            "No range of the Range header lies within the file.",
            error,
            headers={
                **REPRESENTATION,
                "Content-Range": header("bytes */length", {"type": "string"}, required=True),
            },
        ),
    }
