"""The player page's files: one HTML page for every link, its script and its stylesheet.

They are tapevault's own (package data under ``http/player/``), read once and served as fixed
bytes. The page is the same for every link: which link, and its secret, the script reads from
the address. Its Content-Security-Policy allows this server only and no inline script, so
nothing on the page can load or send anything elsewhere; ``no-referrer`` keeps the link's
address from any request the browser makes.
"""

from __future__ import annotations

import re
from functools import cached_property
from importlib.resources import files

from tapevault.http.asgi import (
    NO_STORE,
    NOSNIFF,
    Receive,
    Scope,
    Send,
    refuse_unless_read,
    send_fixed,
    send_json,
)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "media-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_LINK_ID = re.compile(r"[0-9a-f]{16}")
_TYPES = {
    "index.html": b"text/html; charset=utf-8",
    "player.js": b"text/javascript; charset=utf-8",
    "player.css": b"text/css; charset=utf-8",
}


class PlayerFile:
    """One of the page's files (a class: Starlette wraps plain functions as handlers)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @cached_property
    def body(self) -> bytes:
        return files("tapevault.http").joinpath("player", self.name).read_bytes()

    @cached_property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", _TYPES[self.name]),
            (b"content-length", str(len(self.body)).encode()),
            (b"content-security-policy", CSP.encode()),
            (b"referrer-policy", b"no-referrer"),
            NOSNIFF,
            NO_STORE,
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await refuse_unless_read(scope, send):
            return
        link_id = scope.get("path_params", {}).get("link_id")
        if link_id is not None and not _LINK_ID.fullmatch(link_id):
            await send_json(send, 404, {"code": 404, "message": "No such player link."})
            return
        await send_fixed(scope, send, self.headers, self.body)


def player_files() -> list[tuple[str, PlayerFile]]:
    """(path, endpoint) of the page and its assets; the assets first, so "static" is never
    taken for a link id."""
    return [
        ("/player/static/player.js", PlayerFile("player.js")),
        ("/player/static/player.css", PlayerFile("player.css")),
        ("/player/{link_id}", PlayerFile("index.html")),
    ]
