"""Small raw-ASGI helpers shared by the dialects and the gateway.

The hot paths avoid Starlette's Request/Response objects (and never use BaseHTTPMiddleware): these
helpers read headers straight from the scope and send prebuilt byte headers.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"
NO_STORE = (b"cache-control", b"private, no-store")
NOSNIFF = (b"x-content-type-options", b"nosniff")


def request_headers(scope: Scope) -> dict[str, str]:
    """Lower-cased header names to values; repeated headers joined with ', ' (RFC 9110 §5.3)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def query_params(scope: Scope) -> dict[str, str]:
    """The query string as a dict; for a repeated name the first value wins."""
    raw = scope.get("query_string", b"").decode("latin-1")
    params: dict[str, str] = {}
    if "%" in raw or "+" in raw:
        for name, value in parse_qsl(raw, True):
            params.setdefault(name, value)
        return params
    # Nothing to unquote (every signed URL we issue): a plain split is 10x cheaper.
    for pair in raw.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            params.setdefault(name, value)
    return params


def query_pairs(scope: Scope) -> list[tuple[str, str]]:
    """Every (name, value) of the query string in order, repeated names included, for the
    endpoints that refuse a repeated or unknown parameter rather than pick one."""
    raw = scope.get("query_string", b"").decode("latin-1")
    return parse_qsl(raw, keep_blank_values=True)


def client_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


async def send_json(
    send: Send,
    status: int,
    body: Any,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    head_only: bool = False,
    empty: bool = False,
) -> None:
    payload = b"" if empty else orjson.dumps(body)
    # RFC 9110 §8.6: a 204 carries no Content-Length at all.
    length = () if status == 204 else ((b"content-length", str(len(payload)).encode()),)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *(() if empty else ((b"content-type", JSON),)),
                *length,
                NO_STORE,
                NOSNIFF,
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head_only else payload})


def header_list(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


_PROCESS_TAG = secrets.token_hex(4)
_REQUEST_COUNTER = itertools.count(1)
# RFC 9110 §5.6.2 token characters: what a proxy's request id looks like, and nothing that could
# break a log line, a header or a CSV export (no spaces, quotes, commas, controls or non-ASCII).
_TOKEN_ID = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")
# Where the request's id, and the tenant once a credential named it, are kept in the ASGI scope
# (set by tapevault.http.requestlog, read by every access record and the request's log line).
REQUEST_ID = "tapevault.request_id"
TENANT = "tapevault.tenant"


def request_id(headers: Mapping[str, str]) -> str:
    """The client's (or proxy's) X-Request-Id when it is 1-128 token characters, else a new id
    unique to this process (cheaper than a UUID). A hostile value is replaced, never cut."""
    given = headers.get("x-request-id")
    if given is not None and len(given) <= 128 and _TOKEN_ID.fullmatch(given):
        return given
    return new_request_id()


def new_request_id() -> str:
    return f"{_PROCESS_TAG}-{next(_REQUEST_COUNTER):x}"


def scope_request_id(scope: Scope) -> str:
    """This request's id: settled once (``tapevault.http.requestlog`` does it first) and kept
    in the scope, so that its answer, its log line and every access record carry the same."""
    settled = scope.get(REQUEST_ID)
    if settled is not None:
        return str(settled)
    given: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":  # ASGI header names are lower-case
            if given is not None:  # two of them: neither is the id (RFC 9110 would join them)
                given = b""
                break
            given = value
    if given and len(given) <= 128:
        text = given.decode("latin-1")
        if _TOKEN_ID.fullmatch(text):
            scope[REQUEST_ID] = text
            return text
    rid = scope[REQUEST_ID] = new_request_id()
    return rid


def note_tenant(scope: Scope, partner_id: str | None) -> None:
    """Tell the request's log line which tenant's credential it carried (an id, never a key)."""
    if partner_id is not None:
        scope[TENANT] = partner_id


async def refuse_unless_read(scope: Scope, send: Send) -> bool:
    """For a resource that is only read: answer any method but GET and HEAD with 405 and
    ``Allow``, and say whether it did."""
    method = scope["method"]
    if method in ("GET", "HEAD"):
        return False
    await send_json(
        send,
        405,
        {"code": 405, "message": f"Method {method} not allowed."},
        [(b"allow", b"GET, HEAD")],
    )
    return True


async def send_fixed(
    scope: Scope, send: Send, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """A 200 with a body built once (its headers carry its length); no body for HEAD."""
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
