"""Real object-store servers for the tests: moto's S3 server and Azurite (Azure Blob).

Each is started once per test session by a fixture in ``conftest.py``; ``S3Server.new_store_url``
and ``AzuriteServer.new_store_url`` hand each test its own bucket or container, so tests never see
each other's objects. The credentials are the emulators' published test values, given to the
store through the providers' standard variables (``env``), exactly as an operator would.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

AZURITE = Path(__file__).parent / "node" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published well-known development key (not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass
class S3Server:
    """moto's S3 server on a loopback port, in this process's threads."""

    endpoint: str
    server: object = field(repr=False)

    @classmethod
    def start(cls) -> S3Server:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        return cls(f"http://{host}:{port}", server)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def new_store_url(self, prefix: str = "audio") -> str:
        bucket = f"tv-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(f"{self.endpoint}/{bucket}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        return f"s3://{bucket}/{prefix}"

    def stop(self) -> None:
        self.server.stop()  # type: ignore[attr-defined]


@dataclass
class AzuriteServer:
    """Azurite's Blob service in its own process, with its data in a temporary directory."""

    endpoint: str
    process: subprocess.Popen[bytes] = field(repr=False)
    location: tempfile.TemporaryDirectory[str] = field(repr=False)

    @classmethod
    def start(cls) -> AzuriteServer:
        location = tempfile.TemporaryDirectory(prefix="tapevault-azurite-")
        port = _free_port()
        process = subprocess.Popen(
            [str(AZURITE), *_azurite_flags(port, location.name)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                    location.cleanup()
                    raise RuntimeError(f"Azurite did not start: {err[-500:]}") from None
                time.sleep(0.1)
        return cls(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}", process, location)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY,
        }

    def new_store_url(self, prefix: str = "audio") -> str:
        container = f"tv-{uuid.uuid4().hex[:12]}"
        self._create_container(container)
        return f"az://{container}/{prefix}"

    def _create_container(self, name: str) -> None:
        """obstore cannot create containers: one Shared Key signed PUT does."""
        date = formatdate(usegmt=True)
        version = "2021-08-06"
        signed = (
            "PUT\n\n\n\n\n\n\n\n\n\n\n\n"
            f"x-ms-date:{date}\nx-ms-version:{version}\n"
            f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"
        )
        digest = hmac.new(base64.b64decode(AZURITE_KEY), signed.encode(), hashlib.sha256)
        signature = base64.b64encode(digest.digest()).decode()
        request = urllib.request.Request(
            f"{self.endpoint}/{name}?restype=container",
            method="PUT",
            headers={
                "x-ms-date": date,
                "x-ms-version": version,
                "Authorization": f"SharedKey {AZURITE_ACCOUNT}:{signature}",
                "Content-Length": "0",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.location.cleanup()


def _azurite_flags(port: int, location: str) -> list[str]:
    flags = {"--blobHost": "127.0.0.1", "--blobPort": str(port), "--location": location}
    return [*(part for item in flags.items() for part in item), "--skipApiVersionCheck", "--silent"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# The 2 GiB check, run in a child process so its RSS is the store's alone -------------------

BLOCK = 1024 * 1024


def generated(size: int) -> Iterator[bytes]:
    """``size`` bytes in 1 MiB blocks, each different (its number repeated): a stream that
    costs no memory and whose every byte is known."""
    for n in range(0, size, BLOCK):
        block = (n // BLOCK).to_bytes(8, "big") * (BLOCK // 8)
        yield block[: min(BLOCK, size - n)]


def _peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def stream_through(storage_url: str, endpoint: str | None, size: int) -> dict[str, object]:
    """Put ``size`` generated bytes and read them back in full; the growth of this process's
    peak RSS over its size once the store was open."""
    import asyncio

    from tapevault.storage import open_store

    store = open_store(storage_url, endpoint=endpoint)
    store.stat("warm-up")  # connection pools, TLS-free clients: part of the baseline
    base = _peak_kib()
    expected = hashlib.sha256()
    for chunk in generated(size):
        expected.update(chunk)
    info = store.put("big/object.wav", generated(size))
    after_put = _peak_kib()

    async def read_all() -> str:
        got = hashlib.sha256()
        async for chunk in store.read_range("big/object.wav", 0, size, 256 * 1024):
            got.update(chunk)
        return got.hexdigest()

    digest = asyncio.run(read_all())
    after_get = _peak_kib()
    store.delete("big/object.wav")
    return {
        "size": info.size,
        "same": digest == expected.hexdigest(),
        "put_growth_kib": after_put - base,
        "get_growth_kib": after_get - base,
    }


if __name__ == "__main__":
    import json
    import sys

    url, endpoint_arg, size_arg = sys.argv[1:4]
    print(json.dumps(stream_through(url, endpoint_arg or None, int(size_arg))))


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set (``VmRSS``) or its peak since the last reset (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def reset_peak_rss(pid: int) -> None:
    """Start ``VmHWM`` over from the current RSS (Linux: ``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class Outage:
    """A loopback TCP relay to ``target`` that a test can cut (``down``: the listener and every
    relayed connection closed, new ones refused) and restore (``up``) on the same port: a store
    going away and coming back, seen from the server, without stopping the shared store."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split("/")[0].split(":")
        self._target = (host, int(port))
        self.port = _free_port()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._heads = threading.Event()  # set: HEAD requests pass; clear: they wait
        self._heads.set()
        self.up()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                # shutdown wakes the thread blocked in accept(); close alone would not.
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def hold_heads(self) -> None:
        """From now on every ``HEAD`` request (a ``stat``) waits at the relay until
        ``release_heads``: a store that stalls its callers, such as finalization, whose first
        call is a ``stat``, while puts (uploads) still pass."""
        self._heads.clear()

    def release_heads(self) -> None:
        self._heads.set()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if data.startswith(b"HEAD "):  # a request's first line: on loopback, one recv
                    self._heads.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
