"""The server's listening socket, bound before anything else happens.

``serve`` and ``demo`` bind their port first, so a port that is taken is one clear line (and no
migration, tenant or upload has happened yet), and so the demo never talks to whatever else
answers on that port. The bound socket is handed to uvicorn as it is: nothing can take the port
between the check and the server starting.
"""

from __future__ import annotations

import errno
import socket

from tapevault.errors import TapevaultError


class PortUnavailable(TapevaultError):
    """The configured host and port cannot be listened on; the message says what to do."""


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` as uvicorn binds it (``SO_REUSEADDR``), not yet
    listening; raises ``PortUnavailable`` with a one-line explanation."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortUnavailable(_explain(host, port, exc)) from exc
    return sock


def _explain(host: str, port: int, exc: OSError) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    choose = "choose another with --port N (or TAPEVAULT_PORT=N)"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is already in use on {host} (another server?); {choose}"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on {where} (ports below 1024 need privileges); {choose}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine (--host)"
    return f"cannot listen on {where}: {exc.strerror or exc}"
