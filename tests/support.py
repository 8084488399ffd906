"""Helpers that several test modules share, so that no test module imports another.

Beside the other harness modules (``conftest.py`` for fixtures and ``need``, ``dialects.py`` for
in-process clients, ``server.py`` for a real ``tapevault serve``, ``seeds.py`` for the seed
documents), this one holds:

- waiting for a condition instead of sleeping: ``wait_for`` (blocking) and ``until`` (asyncio);
- a real server's sessions and recordings: ``credentials``, ``new_session``, ``make_session``,
  ``wait_available``, ``stored_pcm``, ``plays``;
- live-stream clients: ``ws_url``, ``Sender``, and ``client_frame`` (an RFC 6455 client frame
  built independently of the code under test);
- a database that goes away under an in-process runtime: ``database_gone``.
- what waits in a store for finalization: ``incoming_objects``; ``BucketStore``, an object store
  that behaves like a bucket (no rename, no local path), in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt
import pytest
import requests
from sqlalchemy import create_engine, text
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tapevault import cli
from tapevault.audio_gen import tone_wav_bytes
from tapevault.config import Settings
from tapevault.core.audit import AuditRecord
from tapevault.core.model import Recording, SessionKind
from tapevault.core.ports import ListedObject, ListKeys, ObjectInfo
from tapevault.core.sources import INCOMING_PREFIX
from tapevault.core.wav import CANONICAL_HEADER_SIZE, PcmFormat, canonical_header, parse_wav
from tapevault.errors import StorageError, Unavailable
from tapevault.runtime import Runtime
from tests.conftest import need
from tests.server import Server

T = TypeVar("T")

# Generous: a deadline only matters when the condition never holds, and the machine may be busy.
WAIT_SECONDS = 30.0


def with_query(url: str, **changes: str) -> str:
    """``url`` with the named query parameters set (added or replaced), the others kept."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- waiting for a condition ---------------------------------------------------------------------


def wait_for(
    probe: Callable[[], T | None],
    timeout: float = WAIT_SECONDS,
    what: str = "",
    every: float = 0.05,
) -> T:
    """Call ``probe`` until it returns something other than None or False, and return that;
    fail at the deadline saying what was awaited and what the probe last returned. (Not
    "truthy": an HTTP error response is falsy, and may be just what a test waits for.)"""
    deadline = time.monotonic() + timeout
    while True:
        seen = probe()
        if seen is not None and seen is not False:
            return seen
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"waited {timeout:g} s for {what or probe!r}; the last answer was {seen!r}"
            )
        time.sleep(every)


async def until(
    condition: Callable[[], object], within: float = WAIT_SECONDS, what: str = ""
) -> None:
    """Yield to the event loop until ``condition()`` holds; fail at the deadline saying what
    was awaited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() >= deadline:
            raise AssertionError(f"waited {within:g} s for {what or condition!r}")
        await asyncio.sleep(0.005)


# --- a real server's sessions and recordings -----------------------------------------------------


def credentials(server: Server) -> dict[str, str]:
    """A new tenant's Suki token, as the header that carries it."""
    tenant = server.tenant()
    return {"sdp_suki_token": server.token(tenant["partner_id"])}


def new_session(server: Server, headers: dict[str, str]) -> str:
    """A new ambient session's id."""
    response = requests.post(
        f"{server.base}/api/v1/ambient/session/create", headers=headers, timeout=10
    )
    assert response.status_code == 201, response.text
    session_id: str = response.json()["ambient_session_id"]
    return session_id


def make_session(server: Server, token: str, seconds: float = 3.0) -> tuple[str, bytes]:
    """An ended session holding one uploaded tone, processed: its id and the WAV uploaded."""
    headers = {"sdp_suki_token": token}
    session_id = new_session(server, headers)
    wav = tone_wav_bytes(seconds)
    up = requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/audio",
        headers={**headers, "content-type": "audio/wav"},
        data=wav,
        timeout=30,
    )
    assert up.status_code == 202, up.text
    ended = requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/end", headers=headers, timeout=10
    )
    assert ended.status_code == 200, ended.text
    wait_available(server, headers, session_id)
    return session_id, wav


def wait_available(
    server: Server, headers: dict[str, str], session_id: str, timeout: float = 60
) -> list[dict[str, object]]:
    """The session's recordings once every one is available or failed."""

    def finished() -> list[dict[str, object]] | None:
        body = requests.get(
            f"{server.base}/api/v1/ambient/session/{session_id}", headers=headers, timeout=10
        ).json()
        recordings: list[dict[str, object]] = body["recordings"]
        done = recordings and all(r["status"] in ("available", "failed") for r in recordings)
        return recordings if done else None

    return wait_for(finished, timeout, f"the recordings of {session_id} to be finalized", 0.2)


def stored_pcm(server: Server, recording: dict[str, object], session_id: str) -> bytes:
    """The PCM samples of a recording's stored WAV file, read from the server's data directory."""
    path = next((server.data_dir / "audio").rglob(f"{recording['recording_id']}.wav"))
    if path.stat().st_size <= CANONICAL_HEADER_SIZE:
        return b""  # a stream closed before its first acknowledged byte: a header and no samples
    with path.open("rb") as f:
        info = parse_wav(f, path.stat().st_size)
        f.seek(info.data_offset)
        return f.read(info.data_size)


def plays(url: str) -> None:
    """FFmpeg reads the URL (with its own ranged requests) and decodes every frame."""
    need(shutil.which("ffmpeg") is not None, "ffmpeg is not installed")
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", url, "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


# --- live streams ---------------------------------------------------------------------------------


def live_recording(runtime: Runtime, writer_id: str) -> Recording:
    """A new tenant's session with a live stream open (RECEIVING), written by ``writer_id``."""
    vault = runtime.vault
    partner = vault.tenants.create("clinic", 86400).tenant
    session = vault.sessions.create_session(partner, SessionKind.AMBIENT)
    return vault.ingest.open_stream(
        partner,
        session.session_id,
        "stream/pcm_s16le",
        writer_id,
        sample_rate=16000,
        channels=1,
        bits_per_sample=16,
    )


# --- live-stream clients -------------------------------------------------------------------------


def ws_url(server: Server, session_id: str, query: str = "") -> str:
    """The live-stream WebSocket URL of a session on the server."""
    return f"ws://127.0.0.1:{server.port}/api/v1/ambient/session/{session_id}/stream{query}"


class Sender:
    """Streams frames and tracks the highest acknowledged byte counts: on the node's disk
    (``acked``) and in the object store (``stored``)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.acked = 0
        self.stored = 0
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                body = json.loads(message)
                if body.get("type") == "ack":
                    assert body["bytes"] >= self.acked, "acks never go backwards"
                    assert self.stored <= body["stored"] <= body["bytes"], body
                    self.acked, self.stored = body["bytes"], body["stored"]
        except ConnectionClosed:
            pass

    async def finish(self) -> None:
        """End gracefully: ask the server to end, read acks until it closes (1000)."""
        await self.ws.send('{"type":"end"}')
        await asyncio.wait_for(self.reader, 30)
        assert self.ws.close_code == 1000, self.ws.close_reason


class PacedSender(Sender):
    """Streams a payload in 20 ms frames a little ahead of real time, and keeps how much it
    sent, to compare with what was acknowledged and stored."""

    FRAME = 640  # 20 ms of 16 kHz mono PCM16

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__(ws)
        self.sent = 0

    async def send(self, payload: bytes) -> None:
        """Send ``payload`` in frames; stop if the server closed."""
        for i in range(0, len(payload), self.FRAME):
            if self.reader.done():
                return
            try:
                await self.ws.send(payload[i : i + self.FRAME])
            except ConnectionClosed:
                return
            self.sent += self.FRAME
            await asyncio.sleep(0.002)

    async def acked_all(self, within: float = 10) -> None:
        deadline = time.monotonic() + within
        while self.acked < self.sent and not self.reader.done():
            assert time.monotonic() < deadline, f"only {self.acked} of {self.sent} bytes acked"
            await asyncio.sleep(0.01)


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    """A client frame built independently of the code under test (RFC 6455 §5.2)."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    if n < 126:
        head = bytes((first, (0x80 if masked else 0) | n))
    elif n < 1 << 16:
        head = bytes((first, (0x80 if masked else 0) | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, (0x80 if masked else 0) | 127)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# --- waveform peaks: audio with known loud and silent stretches ----------------------------------

PEAKS_RATE = 16000
# (start, end) seconds of the loud stretches of ``speech_like``; silence everywhere else.
LOUD = ((2.0, 4.0), (7.0, 7.5))
SECONDS = 10.0


def speech_like(seconds: float = SECONDS, rate: int = PEAKS_RATE) -> npt.NDArray[np.int16]:
    """A 440 Hz tone at 80 % of full scale in the ``LOUD`` stretches, digital silence between."""
    t = np.arange(int(seconds * rate)) / rate
    signal = np.zeros(len(t))
    for start, end in LOUD:
        inside = (t >= start) & (t < end)
        signal[inside] = 0.8 * np.sin(2 * np.pi * 440 * t[inside])
    return np.round(signal * 32767).astype(np.int16)


def wav_bytes(samples: npt.NDArray[np.int16], channels: int = 1, bits: int = 16) -> bytes:
    """A canonical WAV of ``samples`` (frames x channels, or mono), at ``bits`` per sample."""
    data = np.asarray(samples).reshape(-1, channels).astype(np.int32)
    if bits == 8:
        pcm = ((data >> 8) + 128).astype(np.uint8).tobytes()
    elif bits == 16:
        pcm = data.astype("<i2").tobytes()
    else:
        wide = (data << 8).astype("<i4").view(np.uint8).reshape(-1, 4)
        pcm = wide[:, :3].tobytes()  # the three low bytes of each 32-bit little-endian value
    return canonical_header(PcmFormat(PEAKS_RATE, channels, bits), len(pcm)) + pcm


def loud_pixels(
    maxs: npt.NDArray[np.int8], spp: int, rate: int = PEAKS_RATE
) -> list[tuple[float, float]]:
    """The stretches (start, end seconds) of the pixels whose peak is above a quarter scale."""
    stretches: list[tuple[float, float]] = []
    loud = np.flatnonzero(maxs > 32)
    if not len(loud):
        return stretches
    breaks = np.flatnonzero(np.diff(loud) > 1)
    for first, last in zip(
        np.concatenate(([loud[0]], loud[breaks + 1])),
        np.concatenate((loud[breaks], [loud[-1]])),
        strict=True,
    ):
        stretches.append((first * spp / rate, (last + 1) * spp / rate))
    return stretches


# --- Debian's Chromium, driven by Playwright (a browser is never downloaded) ---------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--autoplay-policy=no-user-gesture-required",
]


# --- a database outage ---------------------------------------------------------------------------


@contextlib.contextmanager
def database_gone(runtime: Runtime, url: str) -> Iterator[None]:
    """Make the database unusable for the runtime until the block ends: PostgreSQL refuses new
    connections and our backends are terminated; SQLite's directory is moved away, so a
    connection cannot be opened (the pooled ones are closed first, as after a restart)."""
    if url.startswith("sqlite"):
        here = Path(url.removeprefix("sqlite:///")).parent
        runtime.repo.engine.dispose()
        runtime.repo.fast.close()
        here.rename(here.with_name("moved-away"))
        try:
            yield
        finally:
            here.with_name("moved-away").rename(here)
        return
    name = url.rsplit("/", 1)[1]
    admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
        try:
            yield
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    finally:
        admin.dispose()


# --- what waits in the store ---------------------------------------------------------------------


def incoming_objects(store: object) -> list[str]:
    """The keys of the received audio a store holds for finalization (``incoming/``), sorted."""
    assert isinstance(store, ListKeys), f"{type(store).__name__} cannot list its objects"
    return sorted(listed.key for listed in store.list_keys(INCOMING_PREFIX))


class BucketStore:
    """An ``ObjectStore`` that behaves like a bucket, in memory: objects appear whole on ``put``
    (chunks are gathered first), there is no rename (no ``Adopt``) and no path (``local_copy``
    downloads to a temporary file), and objects can be listed. ``fail_puts`` makes puts fail,
    as a store that is down does; ``puts`` records every key put, in order."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, float]] = {}
        self.puts: list[str] = []
        self.fail_puts = False
        self._lock = threading.Lock()

    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        data = b"".join(chunks)
        if self.fail_puts:  # as an adapter words a store that is down (StoreUnavailable)
            raise Unavailable("The object store is unavailable.")
        with self._lock:
            self.objects[key] = (data, time.time())
            self.puts.append(key)
        return ObjectInfo(len(data), self.objects[key][1])

    def stat(self, key: str) -> ObjectInfo | None:
        found = self.objects.get(key)
        return None if found is None else ObjectInfo(len(found[0]), found[1])

    def delete(self, key: str) -> bool:
        with self._lock:
            return self.objects.pop(key, None) is not None

    async def read_range(
        self, key: str, offset: int, length: int, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        if key not in self.objects:
            raise StorageError(f"object {key!r} is missing from storage")
        data = self.objects[key][0][offset : offset + length]
        for start in range(0, len(data), chunk_size):
            yield data[start : start + chunk_size]

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        if key not in self.objects:
            raise StorageError(f"object {key!r} is missing from storage")
        with tempfile.TemporaryDirectory(prefix="bucket-copy-") as tmp:
            path = Path(tmp) / "object"
            path.write_bytes(self.objects[key][0])
            yield path

    def list_keys(self, prefix: str) -> Iterator[ListedObject]:
        for key, (data, mtime) in sorted(self.objects.items()):
            if key.startswith(prefix):
                yield ListedObject(key, ObjectInfo(len(data), mtime))

    def age(self, key: str, seconds: float) -> None:
        """Make an object look ``seconds`` older (for the orphan sweep's grace period)."""
        data, mtime = self.objects[key]
        self.objects[key] = (data, mtime - seconds)


def integrated_records(rt: Runtime) -> list[AuditRecord]:
    """``rt``'s access log once every record durable now is integrated (sequenced and chained;
    requests wait only for durability, the integrator follows within its interval)."""
    if rt.audit is not None:
        assert rt.audit.integrator.settle(10), "the access log was not integrated in time"
    return list(rt.audit_store.records())


def audit_verify(
    settings: Settings, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    """`tapevault audit verify` on ``settings``' data: (exit status, what it printed)."""
    code = cli.main(
        [
            "audit",
            "verify",
            "--data-dir",
            str(settings.data_dir),
            "--database-url",
            settings.database_url,
            *extra,
        ]
    )
    return code, capsys.readouterr().out
