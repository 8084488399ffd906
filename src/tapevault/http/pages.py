"""Pages for people: the server's root (``/``) and the API reference (``/docs``).

Both are rendered from the OpenAPI document (``tapevault.http.reference``) on their first request
(about 10 ms, which every application built in the tests would otherwise pay) and then served as
fixed bytes to GET and HEAD. They hold no script, so the Content-Security-Policy allows
none, and nothing but this server for anything else (the one inline stylesheet by its hash):
a page that loads nothing from elsewhere cannot leak who reads it, and a document string that
slipped through escaping could still not run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

from tapevault.http.asgi import (
    NO_STORE,
    NOSNIFF,
    Receive,
    Scope,
    Send,
    refuse_unless_read,
    send_fixed,
)
from tapevault.http.reference import STYLE_HASH, render_home, render_reference

CSP = (
    "default-src 'self'; script-src 'none'; object-src 'none'; "
    f"style-src '{STYLE_HASH}'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


class HtmlPage:
    """A fixed HTML page, rendered when first asked for (a class: Starlette wraps plain
    functions as request handlers)."""

    def __init__(self, render: Callable[[], str]) -> None:
        self.render = render

    @cached_property
    def body(self) -> bytes:
        return self.render().encode()

    @cached_property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(self.body)).encode()),
            (b"content-security-policy", CSP.encode()),
            (b"referrer-policy", b"no-referrer"),
            NOSNIFF,
            NO_STORE,
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await refuse_unless_read(scope, send):
            await send_fixed(scope, send, self.headers, self.body)


def pages(document: Mapping[str, Any]) -> list[tuple[str, HtmlPage]]:
    """(path, endpoint) of each page, rendered from ``document``."""
    return [
        ("/", HtmlPage(lambda: render_home(document))),
        ("/docs", HtmlPage(lambda: render_reference(document))),
    ]
