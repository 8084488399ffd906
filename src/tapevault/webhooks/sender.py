"""One webhook attempt: a signed POST to the receiver, bounded in time and in what is read.

The connection is made to an address that passed the SSRF policy (webhooks/ssrf.py) at this
very moment, by IP, with the URL's host kept for the Host header and TLS verification: the
address checked is the address connected to. No redirect is followed (a 3xx is a failure), and
nothing of the body is read: the status line and headers decide. The whole exchange (connect,
TLS, request, answer headers) must end within the timeout: a timer shuts the socket down at
the deadline, so a receiver dripping bytes cannot hold a worker longer than that.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from tapevault import __version__
from tapevault.core.webhooks import RETRY_AFTER_CAP_SECONDS, Outcome
from tapevault.webhooks.ssrf import AddressPolicy, allowed_addresses, target

USER_AGENT = f"tapevault-webhooks/{__version__}"
T = TypeVar("T")


def signature(secrets: list[str], msg_id: str, timestamp: int, body: str) -> str:
    """``v1,<sig>`` per secret, space-separated (the specification allows several): a receiver
    holding either the new or the previous secret of a rotation verifies it."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(Webhook(secret).sign(msg_id, moment, body) for secret in secrets)


def signed_headers(secrets: list[str], msg_id: str, body: str, now: float) -> dict[str, str]:
    timestamp = int(now)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secrets, msg_id, timestamp, body),
    }


def post(
    url: str, body: bytes, headers: dict[str, str], policy: AddressPolicy, timeout: float
) -> Outcome:
    """Send one attempt; never raises for anything the receiver or the network does."""
    deadline = time.monotonic() + timeout
    host, port = target(url)
    resolved = _within(timeout, allowed_addresses, policy, url)
    if resolved is None:
        return Outcome(None, f"timed out after {timeout:g} s resolving {host[:100]}")
    if isinstance(resolved, BaseException):
        return Outcome(None, f"cannot resolve {host[:100]}: {resolved}")
    allowed, refused = resolved
    if not allowed:
        reason = refused[0] if refused else "no address"
        return Outcome(None, f"refused: {reason}")
    sock: socket.socket | None = None
    errors = []
    for address in allowed:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            sock = socket.create_connection((str(address), port), timeout=remaining)
            break
        except OSError as exc:
            errors.append(f"{address}: {exc}")
    if sock is None:
        if time.monotonic() >= deadline:
            return Outcome(None, f"timed out after {timeout:g} s connecting")
        return Outcome(None, "cannot connect: " + "; ".join(errors)[:250])
    aborted = threading.Event()
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), _abort, (sock, aborted))
    timer.daemon = True
    timer.start()
    try:
        outcome = _exchange(sock, url, host, port, body, headers, timeout)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if aborted.is_set() or isinstance(exc, TimeoutError):
            return Outcome(None, f"timed out after {timeout:g} s")
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:300])
    finally:
        timer.cancel()
        sock.close()
    if aborted.is_set():
        # Cut off at the deadline: whatever was parsed from a truncated answer (headers that
        # never ended read as complete) proves nothing.
        return Outcome(None, f"timed out after {timeout:g} s")
    return outcome


def _within(seconds: float, fn: Callable[..., T], *args: Any) -> T | BaseException | None:
    """``fn(*args)`` in a thread, waited for at most ``seconds``: its result, the OSError or
    UnicodeError it raised, or None when it is still running (getaddrinfo has no timeout of its
    own; the thread ends when the resolver gives up)."""
    box: list[T | BaseException] = []

    def run() -> None:
        try:
            box.append(fn(*args))
        except (OSError, UnicodeError) as exc:
            box.append(exc)

    thread = threading.Thread(target=run, name="tapevault-webhook-dns", daemon=True)
    thread.start()
    thread.join(seconds)
    return box[0] if box else None


def _exchange(
    sock: socket.socket,
    url: str,
    host: str,
    port: int,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
) -> Outcome:
    parts = urlsplit(url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        conn.sock = context.wrap_socket(sock, server_hostname=host)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn.request("POST", path, body=body, headers={**headers, "connection": "close"})
    response = conn.getresponse()
    status = response.status
    retry_after = _retry_after(response.getheader("retry-after"))
    # Not a byte of the body is read: the status says it all, and a receiver cannot make
    # the worker read without end.
    return Outcome(status, None if 200 <= status < 300 else f"HTTP {status}", retry_after)


def _abort(sock: socket.socket, aborted: threading.Event) -> None:
    """At the deadline: unblock whatever the exchange waits on."""
    aborted.set()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _retry_after(value: str | None) -> int | None:
    """Seconds (``120``) or an HTTP date, bounded; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit() and len(text) <= 10:
        return min(int(text), RETRY_AFTER_CAP_SECONDS)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = int(when.timestamp() - time.time())
    return max(0, min(seconds, RETRY_AFTER_CAP_SECONDS))
