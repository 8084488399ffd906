"""``TAPEVAULT_METRICS_LISTEN``: ``/metrics`` on an address of its own, without a key.

For an operator whose Prometheus sits on an internal network: bind it to an address only that
network reaches (``127.0.0.1:9464``, a private interface), never to the public one.

It runs in the ``serve`` process that owns the port: with several processes that is the parent,
which serves no requests and outlives its children (uvicorn replaces a dead one), so the
listener keeps answering through a crash and sums every child's files; one thread, so it costs
the serving processes nothing. It is the standard library's HTTP server with its limits made
explicit: a request's line and headers must arrive within ``TIMEOUT_SECONDS``, at most
``MAX_CONNECTIONS`` are served at once (others are closed at once), and it answers ``GET`` and
``HEAD`` of ``/metrics`` only (404 for any other path, 405 for any other method).
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tapevault.observe.exposition import CONTENT_TYPE, DatabaseGauges, render

log = logging.getLogger("tapevault.metrics")

PATH = "/metrics"
TIMEOUT_SECONDS = 10
MAX_CONNECTIONS = 8


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = TIMEOUT_SECONDS
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers
    server_version = "tapevault"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        if self.path.partition("?")[0] != PATH:
            self._plain(404, b"Not found: the metrics are at /metrics.\n", body)
            return
        try:
            text = render(self.server.database)
        except Exception:
            log.exception("the metrics could not be collected")
            self._plain(503, b"The metrics could not be collected; the log says why.\n", body)
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(text)

    def _plain(self, status: int, text: bytes, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        if status == 405:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if body:
            self.wfile.write(text)

    def _refuse_method(self) -> None:
        self._plain(405, b"Only GET and HEAD.\n", self.command != "HEAD")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics listener: " + format, *args)


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], database: DatabaseGauges | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.database = database
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: closed at once, not queued
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def start(host: str, port: int, database: DatabaseGauges | None) -> MetricsServer:
    """Bind now (an address in use fails start-up, loudly) and serve in a daemon thread."""
    server = MetricsServer((host, port), database)
    threading.Thread(
        target=server.serve_forever, name="tapevault-metrics-listener", daemon=True
    ).start()
    log.info("metrics on http://%s:%d%s (no key: keep this address private)", host, port, PATH)
    return server
