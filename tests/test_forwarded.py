"""Who the client is behind a proxy: X-Forwarded-For believed only from a trusted peer, walked
from the right, and never taken from garbage (``tapevault.http.forwarded``)."""

from __future__ import annotations

from typing import Any

import pytest

from tapevault.http.asgi import Message, Receive, Scope, Send
from tapevault.http.forwarded import MAX_HOPS, ProxyHeaders, TrustedProxies, forwarded_for

PROXIES = TrustedProxies(["127.0.0.1/32", "10.0.0.0/8", "2001:db8:1::/48"])


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        # The peer is not a proxy: the header is the client's own words.
        ("198.51.100.7", "203.0.113.1", "198.51.100.7"),
        ("198.51.100.7", None, "198.51.100.7"),
        # A trusted proxy names the client.
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        # The client prepended a lie: the right-most untrusted entry wins.
        ("127.0.0.1", "203.0.113.1, 198.51.100.7", "198.51.100.7"),
        # Two trusted proxies in a row, then the client.
        ("127.0.0.1", "203.0.113.1, 198.51.100.7, 10.1.2.3", "198.51.100.7"),
        # Every hop trusted: the left-most (the client sits on a proxy's address).
        ("127.0.0.1", "10.0.0.5, 127.0.0.1", "10.0.0.5"),
        # No header from a trusted proxy: the peer.
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "", "127.0.0.1"),
        # Garbage where the client should be: the nearest address a proxy vouched for.
        ("127.0.0.1", "unknown", "127.0.0.1"),
        ("127.0.0.1", "198.51.100.7, <script>", "127.0.0.1"),
        ("127.0.0.1", "evil.example, 10.1.2.3", "10.1.2.3"),
        ("127.0.0.1", " , ", "127.0.0.1"),
        # Ports and IPv6, as some proxies write them; written back in normal form.
        ("127.0.0.1", "198.51.100.7:4711", "198.51.100.7"),
        ("127.0.0.1", "[2001:DB8::7]:443", "2001:db8::7"),
        ("127.0.0.1", "2001:db8:1::9, 2001:db8::7", "2001:db8::7"),
        ("2001:db8:1::1", "2001:db8::7", "2001:db8::7"),
        # A dual-stack socket's IPv4 peer (IPv4-mapped) is the IPv4 address, trusted or not.
        ("::ffff:127.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "::ffff:198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "198.51.100.7, ::ffff:10.0.0.9", "198.51.100.7"),
        # A peer address that is not one: nothing is believed.
        (None, "198.51.100.7", None),
        ("", "198.51.100.7", ""),
    ],
)
def test_client_address(peer: str | None, header: str | None, client: str | None) -> None:
    """The table of the rule in the module's docstring."""
    assert PROXIES.client(peer, header) == client


def test_nobody_is_trusted_by_default() -> None:
    """Without TAPEVAULT_TRUSTED_PROXIES even loopback's header is ignored (uvicorn's own
    default trusts 127.0.0.1)."""
    nobody = TrustedProxies([])
    assert not nobody
    assert nobody.client("127.0.0.1", "198.51.100.7") == "127.0.0.1"


def test_a_huge_header_costs_a_bounded_walk() -> None:
    """A header of a hundred thousand entries is walked only MAX_HOPS from the right."""
    header = ", ".join(["10.0.0.1"] * 100_000)
    assert PROXIES.client("127.0.0.1", header) == "10.0.0.1"
    lie_beyond_reach = "198.51.100.7, " + ", ".join(["10.0.0.1"] * MAX_HOPS)
    assert PROXIES.client("127.0.0.1", lie_beyond_reach) == "10.0.0.1"


def test_repeated_headers_are_joined_in_order() -> None:
    """Two X-Forwarded-For lines are one list, the first line's entries first."""
    headers = [(b"x-forwarded-for", b"203.0.113.1"), (b"x-forwarded-for", b"198.51.100.7")]
    assert forwarded_for(headers) == "203.0.113.1,198.51.100.7"
    assert PROXIES.client("127.0.0.1", forwarded_for(headers)) == "198.51.100.7"
    assert forwarded_for([(b"host", b"x")]) is None


async def _seen(
    proxies: TrustedProxies, client: tuple[str, int], headers: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(client=scope["client"], scheme=scope["scheme"])

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        return None

    scope = {"type": "http", "client": client, "scheme": "http", "headers": headers}
    await ProxyHeaders(app, proxies)(scope, receive, send)
    return seen


async def test_middleware_rewrites_client_and_scheme_only_for_a_trusted_peer() -> None:
    """The ASGI middleware: a trusted peer's X-Forwarded-For and -Proto are applied; an
    untrusted peer's are not; an unknown proto is ignored."""
    headers = [(b"x-forwarded-for", b"203.0.113.1, 198.51.100.7"), (b"x-forwarded-proto", b"https")]
    trusted = await _seen(PROXIES, ("127.0.0.1", 5000), headers)
    assert trusted == {"client": ("198.51.100.7", 0), "scheme": "https"}
    untrusted = await _seen(PROXIES, ("198.51.100.9", 5000), headers)
    assert untrusted == {"client": ("198.51.100.9", 5000), "scheme": "http"}
    odd = await _seen(PROXIES, ("127.0.0.1", 5000), [(b"x-forwarded-proto", b"gopher")])
    assert odd == {"client": ("127.0.0.1", 5000), "scheme": "http"}
