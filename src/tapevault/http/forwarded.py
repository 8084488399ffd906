"""Who the client is behind a reverse proxy: ``X-Forwarded-For``, believed only from a proxy we
trust (``TAPEVAULT_TRUSTED_PROXIES``).

Each proxy appends the address it received the request from, so the header's right end is
written by the proxies closest to us and its left end by whoever sent the request first — which
may be the client lying. The rule, as for any chain of proxies:

- the socket's peer is not a trusted proxy: the header is the client's own words, ignored;
- otherwise walk the header from the right, skipping trusted proxies: the first address that is
  not one of them is the client. Everything to its left is what that client claimed.
- an entry that is not an IP address where the client should be (``unknown``, garbage, a
  hostname) ends the walk: the nearest address a trusted proxy vouched for is the client.
- every entry trusted (the client is itself on a proxy's address): the left-most one.

uvicorn's own ``--proxy-headers`` does nearly this for ASGI, but live streams leave ASGI after
the handshake (``tapevault.http.wsdirect``) and need the same answer, so both paths use this one
function (``ProxyHeaders`` below for ASGI, ``StreamEndpoint`` for the direct path).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from tapevault.http.asgi import ASGIApp, Receive, Scope, Send

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Set in the scope of a request whose socket peer is a trusted proxy: only such a request may be
# answered with X-Accel-Redirect (a client that reached tapevault around nginx gets the bytes).
PROXIED = "tapevault.proxied"

# More entries than any real chain of proxies: a longer header is walked only this far from the
# right (what lies beyond would be the client's own words anyway).
MAX_HOPS = 32


class TrustedProxies:
    """The networks whose ``X-Forwarded-For`` is believed; an empty set believes nobody."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._trusts = lru_cache(maxsize=1024)(self._compute)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str | None) -> bool:
        if not address or not self.networks or len(address) > 64:
            return False
        return self._trusts(address)

    def _compute(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address for a connection from ``peer`` carrying ``forwarded_for`` (the
        X-Forwarded-For values, joined with commas as RFC 9110 §5.3 allows)."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = forwarded_for.split(",")[-MAX_HOPS:]
        vouched = peer  # the nearest address a trusted proxy stands behind
        for raw in reversed(hops):
            entry = _strip_port(raw.strip())
            ip = _ip(entry)
            if ip is None:
                return vouched
            address = str(ip)
            if not self.trusts(address):
                return address
            vouched = address
        return vouched


def _ip(text: str) -> IPAddress | None:
    """The address, with an IPv4-mapped IPv6 one (``::ffff:127.0.0.1``, how a dual-stack
    socket sees an IPv4 peer) read as the IPv4 address it is, so ``127.0.0.1`` trusts it."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _strip_port(entry: str) -> str:
    """``1.2.3.4:5678`` and ``[2001:db8::1]:443`` to the bare address (some proxies add ports)."""
    if entry.startswith("["):
        end = entry.find("]")
        return entry[1:end] if end > 0 else entry
    if entry.count(":") == 1:
        return entry.split(":", 1)[0]
    return entry


def came_through_proxy(scope: Scope) -> bool:
    """Whether the request's socket peer is a trusted proxy (``ProxyHeaders`` said so)."""
    return bool(scope.get(PROXIED))


def forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Every X-Forwarded-For header of a request, joined in order (a proxy may add its own
    header line rather than extend the first)."""
    values = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]
    return ",".join(values) if values else None


class ProxyHeaders:
    """ASGI middleware: ``scope["client"]`` becomes the client a trusted proxy names, and the
    scheme what it says it received (``X-Forwarded-Proto``); from anyone else both headers are
    ignored."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            peer = str(client[0]) if client else None
            if self.proxies.trusts(peer):
                scope[PROXIED] = True
                headers = scope["headers"]
                address = self.proxies.client(peer, forwarded_for(headers))
                if address != peer:
                    scope["client"] = (address, 0)
                proto = next((v for n, v in headers if n == b"x-forwarded-proto"), None)
                if proto in (b"http", b"https"):
                    secure = proto == b"https"
                    if scope["type"] == "websocket":
                        scope["scheme"] = "wss" if secure else "ws"
                    else:
                        scope["scheme"] = "https" if secure else "http"
        await self.app(scope, receive, send)
