"""A webhook receiver as a real process, for the webhook tests (``Receiver``).

Run as a script (``python -m tests.receiver PORT``) it serves HTTP on 127.0.0.1 and checks every
webhook's signature with the ``standardwebhooks`` package, as a tenant's receiver would: a
request that no configured secret verifies is answered 401 and recorded as unverified. Each path
is configured over ``/_control/...``: its secrets, answers to give in turn (a status, a
``Retry-After``, a delay before answering, raw bytes, headers dripped a byte at a time) and the
answer after those. ``Receiver`` starts it,
configures it, reads what arrived, and can stop and restart it on the same port ("down for a
while").
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.config: dict[str, dict[str, Any]] = {}
        self.received: dict[str, list[dict[str, Any]]] = {}


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any = None, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("content-length") or 0))

        def do_GET(self) -> None:
            if self.path.startswith("/_control/received?path="):
                path = self.path.split("=", 1)[1]
                with state.lock:
                    self._answer(200, state.received.get(path, []))
                return
            self._answer(404)

        def do_POST(self) -> None:
            body = self._body()
            if self.path == "/_control/configure":
                config = json.loads(body)
                with state.lock:
                    state.config[config["path"]] = config
                    state.received.setdefault(config["path"], [])
                self._answer(200, {"ok": True})
                return
            with state.lock:
                config = state.config.get(self.path)
            if config is None:
                self._answer(404)
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            verified_by = []
            for index, secret in enumerate(config.get("secrets", [])):
                try:
                    Webhook(secret).verify(body, headers)
                    verified_by.append(index)
                except WebhookVerificationError:
                    pass
            with state.lock:
                answers = config.setdefault("answers", [])
                answer = answers.pop(0) if answers else config.get("default", {"status": 200})
                state.received[self.path].append(
                    {
                        "id": headers.get("webhook-id"),
                        "timestamp": headers.get("webhook-timestamp"),
                        "signature": headers.get("webhook-signature"),
                        "verified_by": verified_by,
                        "payload": json.loads(body) if verified_by else None,
                        "answered": answer.get("status", 200),
                        "at": time.time(),
                    }
                )
            time.sleep(float(answer.get("delay", 0)))
            if "raw" in answer:  # hostile answers: written as they are, then closed
                self.wfile.write(answer["raw"].encode("latin-1"))
                self.close_connection = True
                return
            if "drip" in answer:  # a byte at a time, never finishing the headers
                self.close_connection = True
                try:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    for _ in range(int(answer["drip"])):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass  # the sender hung up at its deadline, as it should
                return
            if not verified_by:
                self._answer(401, {"error": "no secret verifies the signature"})
                return
            extra = {}
            if "retry_after" in answer:
                extra["retry-after"] = str(answer["retry_after"])
            self._answer(int(answer.get("status", 200)), {"received": True}, extra)

    return Handler


def serve(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(_State()))
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


class Receiver:
    """The receiver process: ``start()``, ``configure(path, ...)``, ``received(path)``,
    ``stop()`` (the port stays this receiver's for a ``start()`` again)."""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Receiver:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.receiver", str(self.port)],
            cwd=_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("PORT "), f"the receiver did not start: {line!r}"
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def configure(
        self,
        path: str,
        secrets: list[str],
        answers: list[dict[str, Any]] | None = None,
        default: dict[str, Any] | None = None,
    ) -> None:
        config = {"path": path, "secrets": secrets, "answers": answers or []}
        if default is not None:
            config["default"] = default
        request = urllib.request.Request(
            self.url("/_control/configure"),
            data=json.dumps(config).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200

    def received(self, path: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url(f"/_control/received?path={path}"), timeout=10) as r:
            found: list[dict[str, Any]] = json.loads(r.read())
        return found


if __name__ == "__main__":
    serve(int(sys.argv[1]))
