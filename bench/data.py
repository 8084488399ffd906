"""Build the benchmark's data through tapevault's own CLI and API, in a temporary directory.

One partner and token (``tapevault tenant create`` / ``token issue``), a session with three short
recordings (for the recording-URL scenario) and a session with one large recording (for the byte
scenarios), uploaded over HTTP like any client would.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.servers import HOST, BenchSetupError
from tapevault.audio_gen import tone_wav_bytes, write_tone_wav

# 48 kHz stereo 16-bit: 192,000 bytes per second, so 1 GiB is about 93 minutes of audio.
BIG_RATE = 48_000
BIG_CHANNELS = 2
_BYTES_PER_SECOND = BIG_RATE * BIG_CHANNELS * 2


@dataclass(frozen=True)
class Dataset:
    token: str
    urls_session: str  # has three recordings
    big_url: str  # presigned (stream) URL of the large recording
    big_path: Path  # the stored canonical WAV behind it
    big_size: int

    @property
    def urls_path(self) -> str:
        return f"/api/v1/ambient/session/{self.urls_session}/recording"

    @property
    def big_url_path(self) -> str:
        """The presigned URL from its path on (the host part is the server's own)."""
        parts = urlsplit(self.big_url)
        return f"{parts.path}?{parts.query}"


def tapevault_env(data_dir: Path, port: int) -> dict[str, str]:
    """The environment for every tapevault command: only this run's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEVAULT_")}
    env.update(
        TAPEVAULT_DATA_DIR=str(data_dir),
        TAPEVAULT_PUBLIC_URL=f"http://{HOST}:{port}",
        TAPEVAULT_PORT=str(port),
        TAPEVAULT_HOST=HOST,
        TAPEVAULT_MAX_UPLOAD_BYTES="3GiB",
    )
    return env


def cli(env: Mapping[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tapevault.cli", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise BenchSetupError(f"tapevault {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def create_tenant(env: Mapping[str, str]) -> str:
    """A partner and a two-hour token for it, through the CLI; returns the token."""
    partner = json.loads(cli(env, "tenant", "create", "bench", "--json"))
    return cli(env, "token", "issue", "--partner", partner["partner_id"], "--ttl", "2h")


class Api:
    """A tiny blocking client for the Suki API on loopback."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        size: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        sent = {"sdp_suki_token": self.token, **(headers or {})}
        if body is not None:
            sent["Content-Type"] = "audio/wav"
            sent["Content-Length"] = str(size if size is not None else len(body))
        conn = http.client.HTTPConnection(HOST, self.port, timeout=600, blocksize=1 << 20)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload

    def call(
        self, method: str, path: str, body: Any = None, size: int | None = None
    ) -> dict[str, Any]:
        status, _, payload = self.request(method, path, body, size)
        if status >= 300:
            raise BenchSetupError(f"{method} {path} -> {status}: {payload[:300]!r}")
        result: dict[str, Any] = json.loads(payload)
        return result

    def new_session(self) -> str:
        session_id: str = self.call("POST", "/api/v1/ambient/session/create")["ambient_session_id"]
        return session_id

    def upload(self, session_id: str, body: bytes | Path) -> dict[str, Any]:
        path = f"/api/v1/ambient/session/{session_id}/audio"
        if isinstance(body, Path):
            with body.open("rb") as f:
                return self.call("POST", path, f, body.stat().st_size)
        return self.call("POST", path, body)

    def end(self, session_id: str) -> None:
        self.call("POST", f"/api/v1/ambient/session/{session_id}/end")

    def recordings(self, session_id: str, count: int, timeout_s: float) -> list[dict[str, Any]]:
        """The session's recording links once ``count`` recordings are available.

        Uploads may be acknowledged before they are stored (202, finished by a worker), so this
        polls until they are listed, for at most ``timeout_s``.
        """
        path = f"/api/v1/ambient/session/{session_id}/recording"
        deadline = time.monotonic() + timeout_s
        while True:
            status, _, payload = self.request("GET", path)
            if status == 200:
                recordings: list[dict[str, Any]] = json.loads(payload)["recordings"]
                if len(recordings) == count:
                    return recordings
            elif status != 404:
                raise BenchSetupError(f"GET {path} -> {status}: {payload[:300]!r}")
            if time.monotonic() > deadline:
                raise BenchSetupError(f"{count} recordings not available after {timeout_s:.0f} s")
            time.sleep(0.1)

    def media(self, url: str, method: str = "GET", byte_range: str | None = None) -> bytes:
        """The body of a presigned URL (or its Content-Length for HEAD), checking the status."""
        parts = urlsplit(url)
        headers = {"Range": f"bytes={byte_range}"} if byte_range else {}
        status, got, payload = self.request(
            method, f"{parts.path}?{parts.query}", None, None, headers
        )
        if status not in (200, 206):
            raise BenchSetupError(f"{method} {parts.path} -> {status}: {payload[:300]!r}")
        return got["content-length"].encode() if method == "HEAD" else payload


def build(api: Api, data_dir: Path, scratch: Path, big_bytes: int) -> Dataset:
    """Upload the recordings, wait until they are served, and find the big one's stored file."""
    small = api.new_session()
    for seconds in (5.0, 10.0, 20.0):
        api.upload(small, tone_wav_bytes(seconds, sample_rate=16000))
    api.end(small)
    api.recordings(small, 3, timeout_s=120)

    big = api.new_session()
    source = scratch / "big-source.wav"
    write_tone_wav(
        source, big_bytes / _BYTES_PER_SECOND, sample_rate=BIG_RATE, channels=BIG_CHANNELS
    )
    try:
        uploaded = api.upload(big, source)
    finally:
        source.unlink()
    api.end(big)
    (link,) = api.recordings(big, 1, timeout_s=120 + big_bytes / (10 << 20))
    url = link["presigned_url"]
    size = int(api.media(url, "HEAD"))
    stored = stored_file(data_dir / "audio", uploaded["recording_id"], size)
    warm_page_cache(stored)
    # nginx will serve the stored file: it must be byte for byte what tapevault serves.
    with stored.open("rb") as f:
        head, tail = f.read(4096), os.pread(f.fileno(), 4096, size - 4096)
    if api.media(url, byte_range="0-4095") != head or api.media(url, byte_range="-4096") != tail:
        raise BenchSetupError(f"{stored} is not the representation tapevault serves")
    return Dataset(token=api.token, urls_session=small, big_url=url, big_path=stored, big_size=size)


def stored_file(audio_root: Path, recording_id: str, size: int) -> Path:
    """The one file under the storage root named after the recording, of the served size."""
    found = [p for p in audio_root.rglob(f"{recording_id}*") if p.stat().st_size == size]
    if len(found) != 1:
        raise BenchSetupError(f"cannot find the stored file of {recording_id} under {audio_root}")
    return found[0]


def warm_page_cache(path: Path) -> None:
    """Read the file once, so that both servers serve it from memory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, 8 << 20):
            pass
    finally:
        os.close(fd)
