"""Listening: player links, the player page and its playlist (``http/playerlinks.py``).

tapevault's own, so nothing here comes from a seed. A link is made with a workspace key (any
role) or Suki's credentials; the page it opens reads the link's secret from the address's
fragment and sends it as ``X-Player-Key`` to the playlist, which hands out short stream URLs
signed through the link. Errors in the ``{code, message}`` shape; 410 adds why and when.
"""

from __future__ import annotations

from tapevault.http.openapi.common import (
    BEARER_SCHEME,
    JSON,
    SUKI_SCHEME,
    Json,
    Section,
    nullable,
    operation,
    path_param,
    ref,
    response,
)

TAG = "Listening"
PLAYER_KEY_SCHEME = "PlayerKey"

_STR = {"type": "string"}
_INT = {"type": "integer"}
_ISO = {
    "type": "string",
    "format": "date-time",
    "description": "ISO 8601, UTC, milliseconds.",
}
_LINK = {
    "link_id": {**_STR, "description": "16 hexadecimal digits."},
    "session_id": _STR,
    "created_at": _ISO,
    "expires_at": _ISO,
    "revoked_at": nullable(_ISO),
}
_TRACK = {
    "recording_id": _STR,
    "sequence_number": _INT,
    "channel": nullable(_STR),
    "offset_ms": {**_INT, "description": "Where the track starts on the session's timeline."},
    "duration_ms": _INT,
    "url": {**_STR, "description": "A stream URL signed through the link (Range)."},
    "expires_at": {**_INT, "description": "Unix seconds; fetch the playlist again before."},
    "peaks_url": nullable({**_STR, "description": "Waveform peaks (audiowaveform JSON)."}),
}


def _object(properties: Json, description: str) -> Json:
    return {
        "type": "object",
        "description": description,
        "required": list(properties),
        "properties": properties,
    }


SCHEMAS: Json = {
    "PlayerLink": _object(_LINK, "A player link (never its secret)."),
    "PlayerLinkCreated": _object(
        {
            **_LINK,
            "url": {
                **_STR,
                "description": "The page, the secret in its fragment (#k=...): shown only now.",
            },
        },
        "A new player link.",
    ),
    "PlayerLinks": _object(
        {"session_id": _STR, "links": {"type": "array", "items": ref("PlayerLink")}},
        "A session's player links, newest first.",
    ),
    "PlayerLinkRequest": {
        "type": "object",
        "properties": {
            "ttl": {
                "type": "string",
                "description": "How long the link lives: 12h by default, at most 7d.",
                "example": "12h",
            }
        },
    },
    "Playlist": _object(
        {
            "link_id": _STR,
            "session_id": _STR,
            "kind": _STR,
            "link_expires_at": {**_INT, "description": "Unix seconds."},
            "server_time": {**_INT, "description": "Unix seconds, to time renewals by."},
            "duration_ms": _INT,
            "tracks": {"type": "array", "items": _object(_TRACK, "One track of the timeline.")},
        },
        "The session as one timeline.",
    ),
    "PlayerGone": {
        "type": "object",
        "description": "410: the link was revoked or expired, or the session's audio is gone.",
        "required": ["code", "message"],
        "properties": {
            "code": _INT,
            "message": _STR,
            "reason": _STR,
            "at": _INT,
            "policy": nullable(_STR),
        },
    },
}


def _error(description: str, schema: str = "SukiError") -> Json:
    return response(description, ref(schema))


_E = {
    "400": _error("A malformed body or ttl."),
    "401": _error("Missing or invalid credentials."),
    "403": _error("The credential may not do that."),
    "404": _error("No such session or link (another tenant's answers the same)."),
    "405": _error("Another method than the path takes."),
    "409": _error("The session cannot be played (e.g. deleted)."),
    "410": _error("Revoked, expired, or the audio is gone.", "PlayerGone"),
    "413": _error("The body is over 4 KiB."),
    "500": _error("Service failure."),
    "503": _error("The database or the access log cannot be used; nothing was done."),
}


def _op(
    method: str,
    operation_id: str,
    summary: str,
    ok: tuple[str, Json],
    errors: str,
    parameters: list[Json],
    security: str | None,
    body: str | None = None,
) -> Json:
    status, answer = ok
    return {
        method: operation(
            tag=TAG,
            operation_id=operation_id,
            summary=summary,
            responses={status: answer, **{code: _E[code] for code in errors.split()}},
            parameters=parameters,
            request_body=None
            if body is None
            else {"required": False, "content": {JSON: {"schema": ref(body)}}},
            security=security,
        )
    }


_SESSION_ID = path_param("session_id", "A session id, or a call's SID.")
_LINK_ID = path_param("link_id", "The link's id.")
_FILE = {"type": "string"}


def paths() -> Json:
    links = "/api/v1/sessions/{session_id}/player-links"
    made = ("201", response("The link; its url holds the secret.", ref("PlayerLinkCreated")))
    return {
        links: {
            **_op(
                "post",
                "createPlayerLink",
                "A link to a page that plays the session (any workspace key)",
                made,
                "400 401 403 404 409 410 413 500 503",
                [_SESSION_ID],
                BEARER_SCHEME,
                "PlayerLinkRequest",
            ),
            **_op(
                "get",
                "listPlayerLinks",
                "The session's player links, never their secrets",
                ("200", response("Its links.", ref("PlayerLinks"))),
                "401 403 404 500 503",
                [_SESSION_ID],
                BEARER_SCHEME,
            ),
        },
        "/api/v1/player-links/{link_id}": _op(
            "delete",
            "revokePlayerLink",
            "Revoke a link: its page and every media URL it issued stop at once",
            ("200", response("The link, revoked.", ref("PlayerLink"))),
            "401 403 404 500 503",
            [_LINK_ID],
            BEARER_SCHEME,
        ),
        "/api/v1/ambient/session/{session_id}/player": _op(
            "get",
            "getPlayerLink",
            "A player link made with Suki's credentials (a new link at every call)",
            ("200", response("The link; its url holds the secret.", ref("PlayerLinkCreated"))),
            "400 401 404 409 410 500 503",
            [_SESSION_ID],
            SUKI_SCHEME,
        ),
        "/player/{link_id}/playlist": _op(
            "get",
            "getPlaylist",
            "The page's data: the session's timeline with short stream URLs",
            ("200", response("The timeline.", ref("Playlist"))),
            "401 404 410 500 503",
            [_LINK_ID],
            PLAYER_KEY_SCHEME,
        ),
        "/player/{link_id}": _op(
            "get",
            "playerPage",
            "The player page (HTML; it reads the secret from the fragment)",
            ("200", response("HTML.", content={"text/html": {"schema": _FILE}})),
            "404",
            [_LINK_ID],
            None,
        ),
        "/player/static/player.js": _op(
            "get",
            "playerScript",
            "The player page's script",
            ("200", response("JavaScript.", content={"text/javascript": {"schema": _FILE}})),
            "",
            [],
            None,
        ),
        "/player/static/player.css": _op(
            "get",
            "playerStylesheet",
            "The player page's stylesheet",
            ("200", response("CSS.", content={"text/css": {"schema": _FILE}})),
            "",
            [],
            None,
        ),
    }


SECTION = Section(
    tag={
        "name": TAG,
        "description": (
            "Player links: a page that plays a session as one timeline with its waveform, "
            "renewing its short media URLs itself. Made with a workspace key or Suki's "
            "credentials; the page's playlist takes the link's secret as X-Player-Key. Every "
            "URL issued and every read through a link is in the access log with the link as "
            "the actor."
        ),
    },
    paths=paths(),
    schemas=SCHEMAS,
)
