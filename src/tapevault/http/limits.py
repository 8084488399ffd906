"""What one connection may cost the server: its header size, its silences, its pings.

Plain values, shared by ``tapevault.http.httpserver`` (uvicorn's HTTP protocol with limits) and
the WebSocket protocols (``tapevault.http.wsserver``, ``tapevault.http.wsdirect``). The settings
reach the protocols through the lifespan state (``LIMITS_STATE``), as the stream endpoint does:
uvicorn hands that state to every protocol it creates, in every worker process.
"""

from __future__ import annotations

from dataclasses import dataclass

LIMITS_STATE = "tapevault.limits"  # lifespan state key of the ConnectionLimits

# A peer whose unread output is over this when it sends a ping is not reading its pongs: it is
# closed (1008) rather than sent more. Acks and pongs are a few bytes each; a client that reads
# never gets near it.
PING_BACKLOG_BYTES = 64 * 1024
# Pings answered in a burst, and per second after it: a keepalive is one every few seconds.
PING_BURST = 32
PING_RATE = 4.0
CLOSE_TIMEOUT = 10.0  # after our close frame or final answer, how long before we hang up


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection bounds of ``tapevault serve`` (the TAPEVAULT_* settings of the same name)."""

    max_header_bytes: int = 64 * 1024
    header_timeout: float = 30.0
    body_timeout: float = 60.0


class PingGuard:
    """Whether a ping gets its pong: a token bucket against floods, and no pong at all for a
    peer that does not read what it is sent (the pongs would pile up in our write buffer)."""

    __slots__ = ("_stamp", "_tokens")

    def __init__(self, now: float) -> None:
        self._tokens = float(PING_BURST)
        self._stamp = now

    def refusal(self, now: float, unread: int) -> str | None:
        """None to answer this ping; otherwise why the connection is closed (code 1008)."""
        if unread > PING_BACKLOG_BYTES:
            return "too many pings: the client does not read its pongs"
        self._tokens = min(float(PING_BURST), self._tokens + (now - self._stamp) * PING_RATE)
        self._stamp = now
        if self._tokens < 1.0:
            return "too many pings"
        self._tokens -= 1.0
        return None
