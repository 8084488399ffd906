"""Object-store emulators for the benchmarks, each in its own process (not threads of the
harness), so that their CPU is read apart from tapevault's: moto's S3 server and Azurite."""

from __future__ import annotations

import shutil
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.servers import HOST, BenchSetupError, Server, free_port, spawn


@dataclass
class Emulator:
    """An object store on loopback and what a tapevault node needs to use it."""

    kind: str  # "s3" or "azure"
    label: str
    server: Server
    endpoint: str
    env: dict[str, str]
    new_store_url: Callable[[], str]
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        self.server.stop()
        for step in self.cleanup:
            step()


def start_moto(log: Path) -> Emulator:
    """moto's S3 server (werkzeug, threaded) in its own process; objects held in its memory."""
    port = free_port()
    server = spawn(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        port=port,
        log=log,
    )
    endpoint = server.base_url

    def bucket() -> str:
        name = f"tv-bench-{uuid.uuid4().hex[:10]}"
        put = urllib.request.Request(f"{endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(put, timeout=10) as answer:
            if answer.status != 200:
                raise BenchSetupError(f"moto would not create bucket {name}: {answer.status}")
        return f"s3://{name}/audio"

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    return Emulator("s3", "S3 (moto server)", server, endpoint, env, bucket)


def azurite_available() -> bool:
    from tests.objectstores import AZURITE

    return AZURITE.exists() and shutil.which("node") is not None


def start_azurite(log: Path) -> Emulator:
    """Azurite's Blob service (Node.js) in its own process, blobs in a directory next to
    ``log`` (inside the run's temporary directory, removed with it).

    The container is made by the tests' helper (one Shared Key signed PUT; obstore cannot)."""
    from tests.objectstores import AZURITE, AzuriteServer, _azurite_flags

    location = tempfile.TemporaryDirectory(prefix="azurite-", dir=log.parent)
    port = free_port()
    try:
        server = spawn(
            "azurite",
            [str(AZURITE), *_azurite_flags(port, location.name)],
            port=port,
            log=log,
        )
    except BaseException:
        location.cleanup()
        raise
    helper = AzuriteServer(f"{server.base_url}/devstoreaccount1", server.proc, location)
    return Emulator(
        "azure",
        "Azure Blob (Azurite)",
        server,
        helper.endpoint,
        helper.env,
        helper.new_store_url,
        [location.cleanup],
    )
