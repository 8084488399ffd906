"""Which receiver addresses tapevault may connect to (server-side request forgery).

A webhook URL is typed by a tenant, and tapevault's worker then sends requests to it from inside
the operator's network: without a check, a tenant could reach the metadata service at
169.254.169.254, the database, or anything on loopback. So a receiver's host must resolve only to
global unicast addresses, unless the operator allows more (``TAPEVAULT_WEBHOOK_ALLOW_PRIVATE``:
``on`` for any address, or a list of CIDR networks). The check is made at registration and again
at every delivery, against the very address then connected to, so a DNS answer that changes
between the two (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from tapevault.errors import InvalidRequest, Unavailable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """``allow_all``: any address (``on``); ``allowed``: networks allowed besides public ones."""

    allow_all: bool = False
    allowed: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AddressPolicy:
        """``off`` (the default), ``on``, or comma-separated CIDRs (else ValueError)."""
        value = text.strip().lower()
        if value in ("", "off", "no", "false"):
            return cls()
        if value in ("on", "yes", "true"):
            return cls(allow_all=True)
        networks = []
        for item in (p.strip() for p in value.split(",")):
            if item:
                networks.append(ipaddress.ip_network(item, strict=False))
        return cls(allowed=tuple(networks))

    def describe(self) -> str:
        if self.allow_all:
            return "on"
        return ",".join(str(n) for n in self.allowed) or "off"

    def refusal(self, address: Address) -> str | None:
        """Why ``address`` may not be connected to, or None when it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
        if self.allow_all or any(address in n for n in self.allowed):
            return None
        for kind, flag in (
            ("unspecified", address.is_unspecified),
            ("loopback", address.is_loopback),
            ("link-local", address.is_link_local),
            ("multicast", address.is_multicast),
            ("reserved", address.is_reserved),
            ("private", address.is_private),
        ):
            if flag:
                return f"{address} is a {kind} address"
        if not address.is_global:
            return f"{address} is not a public address"
        return None


def target(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL already checked by core.webhooks.check_url_shape."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def allowed_addresses(policy: AddressPolicy, url: str) -> tuple[list[Address], list[str]]:
    """The addresses of the URL's host that may be connected to, and why the others may not."""
    host, port = target(url)
    refused: list[str] = []
    allowed: list[Address] = []
    for address in resolve(host, port):
        reason = policy.refusal(address)
        if reason is None:
            allowed.append(address)
        else:
            refused.append(reason)
    return allowed, refused


class CheckAddress:
    """At registration: the URL's host must resolve, and to allowed addresses only (one
    refused address is enough to refuse: which one a connection gets is the resolver's)."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    def __call__(self, url: str) -> None:
        host, _ = target(url)
        try:
            allowed, refused = allowed_addresses(self.policy, url)
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:  # the resolver is failing, not the name
                raise Unavailable(
                    "The receiver's host cannot be resolved right now; try again shortly."
                ) from None
            raise InvalidRequest(f"url's host {host[:100]!r} does not resolve.") from None
        except (OSError, UnicodeError):
            raise InvalidRequest(f"url's host {host[:100]!r} does not resolve.") from None
        if refused:
            raise InvalidRequest(
                f"url's host resolves to an address webhooks may not reach: {refused[0]} "
                "(an operator may allow it with TAPEVAULT_WEBHOOK_ALLOW_PRIVATE)."
            )
        if not allowed:
            raise InvalidRequest(f"url's host {host[:100]!r} does not resolve.")
