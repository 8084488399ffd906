"""Uploads against lies, full disks and bombs (http/uploads.py and what it calls): a body is
refused before its 202 when it cannot be kept, with a reason, and leaves nothing behind."""

from __future__ import annotations

import base64
import contextlib
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.config import Settings
from tapevault.core.access import MemoryAccessLog
from tapevault.core.clock import FixedClock
from tapevault.core.model import SessionKind
from tapevault.core.sources import upload_key
from tapevault.errors import QuotaExceeded
from tapevault.http.stream import close_code
from tapevault.runtime import Runtime, open_runtime
from tests.conftest import need
from tests.dialects import Customer, asgi_client, customer
from tests.support import incoming_objects


@pytest.fixture
def who(runtime: Runtime, clock: FixedClock) -> Customer:
    return customer(runtime, clock)


async def new_session(client: httpx.AsyncClient, who: Customer) -> str:
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    assert created.status_code == 201
    session_id: str = created.json()["ambient_session_id"]
    return session_id


async def post_audio(
    client: httpx.AsyncClient, who: Customer, session_id: str, body: bytes
) -> httpx.Response:
    return await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=body,
    )


def kept_files(runtime: Runtime) -> list[str]:
    """Every file an upload may leave: spool, node-local work files, tus, and the store's
    objects (received audio waits in ``audio/incoming/``, stored audio beside it)."""
    root = runtime.settings.data_dir
    return sorted(
        str(p.relative_to(root))
        for sub in ("spool", "work", "tus", "audio")
        for p in (root / sub).rglob("*")
        if p.is_file()
    )


def claiming(body: bytes, declared: int) -> bytes:
    """``body`` (a WAV) with its data chunk's size field set to ``declared``."""
    blob = bytearray(body)
    struct.pack_into("<I", blob, blob.index(b"data") + 4, declared)
    return bytes(blob)


def float_wav(frames: int) -> bytes:
    """A mono 32-bit float WAV (FFmpeg's path, not the PCM fast path) of ``frames`` samples."""
    data = struct.pack(f"<{frames}f", *([0.25] * frames))
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
    chunks += struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


# --- a WAV header that lies about its size --------------------------------------------------


@pytest.mark.parametrize("kind", ["pcm", "float"])
async def test_wav_claiming_4_gb_with_1_kb_present_is_400_before_any_202(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, kind: str
) -> None:
    """A data chunk that declares ~4 GB over 1 KB of audio is refused with 400 and a reason,
    whatever the encoding, and nothing is kept (it used to be acknowledged, then failed)."""
    session_id = await new_session(client, who)
    body = tone_wav_bytes(0.03, sample_rate=16000) if kind == "pcm" else float_wav(256)
    lie = claiming(body, 0xFFFFFF00)
    response = await post_audio(client, who, session_id, lie)
    assert response.status_code == 400, response.text
    assert "truncated: header declares 4294967040 bytes" in response.json()["message"]
    assert kept_files(runtime) == []
    session = await client.get(f"/api/v1/ambient/session/{session_id}", headers=who.suki)
    assert session.json()["recordings"] == []


@pytest.mark.parametrize("declared", [0, 0xFFFFFFFF, "present+40"])
async def test_streaming_placeholders_and_small_shortfalls_are_stored_as_present(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, declared: int | str
) -> None:
    """Streaming writers' 0/0xFFFFFFFF and a claim a few bytes over the body are accepted and
    stored at the size really present."""
    session_id = await new_session(client, who)
    body = tone_wav_bytes(0.5, sample_rate=16000)
    present = len(body) - body.index(b"data") - 8
    size = present + 40 if declared == "present+40" else int(declared)
    response = await post_audio(client, who, session_id, claiming(body, size))
    assert response.status_code == 202, response.text
    runtime.worker.run_until_idle()
    session = await client.get(f"/api/v1/ambient/session/{session_id}", headers=who.suki)
    (recording,) = session.json()["recordings"]
    assert recording["status"] == "available"
    assert recording["bytes"] == 44 + present


# --- a full disk ------------------------------------------------------------------------------

TINY_DISK = "1m"


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[None]:
    """A tmpfs of ``size`` mounted at ``where`` for the block (root only), always unmounted."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    need(done.returncode == 0, f"cannot mount a tmpfs (root needed): {done.stderr.strip()}")
    try:
        yield
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def full_disk(tmp_path: Path, clock: FixedClock) -> Iterator[Runtime]:
    """A runtime whose data directory is a 1 MiB disk (the database lives elsewhere)."""
    data = tmp_path / "data"
    with tmpfs(data, TINY_DISK):
        settings = Settings.load(
            {
                "data_dir": str(data),
                "database_url": f"sqlite:///{tmp_path / 'meta.db'}",
                "public_url": "https://vault.test",
                "max_upload_bytes": "8M",
            },
            env={},
        )
        rt = open_runtime(settings, clock=clock, access_log=MemoryAccessLog())
        try:
            yield rt
        finally:
            rt.close()


@pytest.fixture
async def disk_client(full_disk: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(full_disk) as c:
        yield c


BIG = tone_wav_bytes(70.0, sample_rate=16000)  # 2.2 MB: more than the whole disk


def leftovers(runtime: Runtime) -> list[str]:
    """Files a refused request might leave on the disk: spooled, temporary or partial."""
    root = runtime.settings.data_dir
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and (p.suffix in (".part", ".tmp") or p.name.startswith("."))
    )


async def test_suki_upload_on_a_full_disk_is_507_and_leaves_nothing(
    disk_client: httpx.AsyncClient, full_disk: Runtime, clock: FixedClock
) -> None:
    """ENOSPC while a body is spooled is 507 in Suki's shape with a reason and Retry-After;
    the partial spool file is gone, and the next upload that fits is taken."""
    who = customer(full_disk, clock)
    session_id = await new_session(disk_client, who)
    refused = await post_audio(disk_client, who, session_id, BIG)
    assert refused.status_code == 507, refused.text
    assert refused.json() == {
        "code": 507,
        "message": "The server's disk is full: the upload was not kept. Retry later.",
    }
    assert refused.headers["retry-after"] == "60"
    assert kept_files(full_disk) == [] and leftovers(full_disk) == []
    taken = await post_audio(disk_client, who, session_id, tone_wav_bytes(0.5))
    assert taken.status_code == 202, taken.text


async def test_amigo_upload_on_a_full_disk_is_507_in_amigo_shape(
    disk_client: httpx.AsyncClient, full_disk: Runtime, clock: FixedClock
) -> None:
    """Amigo's call upload gets the same 507, worded as FastAPI's ``{"detail": ...}``."""
    who = customer(full_disk, clock)
    refused = await disk_client.post(
        f"/v1/{who.ws}/calls/CA1/audio",
        params={"channel": "inbound"},
        headers={**who.bearer, "content-type": "audio/wav"},
        content=BIG,
    )
    assert refused.status_code == 507, refused.text
    assert refused.json() == {
        "detail": "The server's disk is full: the upload was not kept. Retry later."
    }
    assert kept_files(full_disk) == [] and leftovers(full_disk) == []


def tus_headers(who: Customer, **extra: str) -> dict[str, str]:
    return {**who.suki, "tus-resumable": "1.0.0", **extra}


async def tus_create(client: httpx.AsyncClient, who: Customer, session_id: str, n: int) -> str:
    meta = f"session_id {base64.b64encode(session_id.encode()).decode()}"
    created = await client.post(
        "/api/v1/uploads",
        headers=tus_headers(who, **{"upload-length": str(n), "upload-metadata": meta}),
    )
    assert created.status_code == 201, created.text
    return created.headers["location"].rsplit("/", 1)[1]


async def tus_patch(
    client: httpx.AsyncClient, who: Customer, upload_id: str, offset: int, body: bytes
) -> httpx.Response:
    return await client.patch(
        f"/api/v1/uploads/{upload_id}",
        headers=tus_headers(
            who,
            **{"upload-offset": str(offset), "content-type": "application/offset+octet-stream"},
        ),
        content=body,
    )


async def test_tus_patch_on_a_full_disk_is_507_and_keeps_only_what_it_acknowledges(
    disk_client: httpx.AsyncClient, full_disk: Runtime, clock: FixedClock
) -> None:
    """A PATCH that fills the disk is 507 in tus's shape; the data file holds exactly the
    offset HEAD reports (no half-written chunk), and once the upload is terminated the space is
    back: a small upload completes."""
    who = customer(full_disk, clock)
    session_id = await new_session(disk_client, who)
    upload_id = await tus_create(disk_client, who, session_id, len(BIG))
    refused = await tus_patch(disk_client, who, upload_id, 0, BIG)
    assert refused.status_code == 507, refused.text
    assert refused.json()["code"] == 507 and "disk is full" in refused.json()["message"]
    head = await disk_client.head(f"/api/v1/uploads/{upload_id}", headers=tus_headers(who))
    offset = int(head.headers["upload-offset"])
    data = full_disk.settings.data_dir / "tus" / f"{upload_id}.bin"
    assert data.stat().st_size == offset < len(BIG)
    assert [p.name for p in data.parent.glob(".*.tmp")] == []
    gone = await disk_client.delete(f"/api/v1/uploads/{upload_id}", headers=tus_headers(who))
    assert gone.status_code == 204
    small = tone_wav_bytes(0.5)
    again = await tus_create(disk_client, who, session_id, len(small))
    done = await tus_patch(disk_client, who, again, 0, small)
    assert done.status_code == 204 and done.headers["tapevault-recording-id"]


async def test_finalize_on_a_full_disk_waits_for_space_and_then_finishes(
    disk_client: httpx.AsyncClient, full_disk: Runtime, clock: FixedClock
) -> None:
    """An acknowledged upload whose finalization meets a full disk stays `processing` (never
    `failed` for it), leaves no temporary file, and finishes once there is space."""
    who = customer(full_disk, clock)
    session_id = await new_session(disk_client, who)
    body = tone_wav_bytes(14.0, sample_rate=16000)  # 448 kB: the stored copy does not fit
    taken = await post_audio(disk_client, who, session_id, body)
    assert taken.status_code == 202, taken.text
    for _ in range(6):  # more tries than MAX_ATTEMPTS: a full disk never ends it `failed`
        full_disk.worker.run_until_idle()
        clock.advance(61)
    session = await disk_client.get(f"/api/v1/ambient/session/{session_id}", headers=who.suki)
    assert session.json()["recordings"][0]["status"] == "processing"
    assert leftovers(full_disk) == []
    data = str(full_disk.settings.data_dir)
    subprocess.run(["mount", "-o", "remount,size=4m", data], check=True)
    full_disk.worker.run_until_idle()
    session = await disk_client.get(f"/api/v1/ambient/session/{session_id}", headers=who.suki)
    (recording,) = session.json()["recordings"]
    assert recording["status"] == "available" and recording["bytes"] == len(body)
    assert leftovers(full_disk) == [] and incoming_objects(full_disk.vault.store) == []


# --- bombs ------------------------------------------------------------------------------------


def silence_flac(path: Path, seconds: int, *, piped: bool) -> Path:
    """FLAC of stereo 48 kHz silence: tiny, and 1,140 times its size once decoded. ``piped``
    leaves STREAMINFO's length unknown (as a live encoder's does)."""
    need(shutil.which("ffmpeg") is not None, "ffmpeg is not installed")
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi"]
    args += ["-i", "anullsrc=r=48000:cl=stereo", "-t", str(seconds), "-c:a", "flac"]
    if piped:
        with path.open("wb") as out:
            subprocess.run([*args, "-f", "flac", "-"], stdout=out, check=True)
    else:
        subprocess.run([*args, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """10 minutes of silence as FLAC, with and without a stated length (~100 kB each)."""
    root = tmp_path_factory.mktemp("bombs")
    return {
        "stated": silence_flac(root / "stated.flac", 600, piped=False).read_bytes(),
        "unstated": silence_flac(root / "unstated.flac", 600, piped=True).read_bytes(),
    }


async def test_a_bomb_that_states_its_length_is_400_before_any_202(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, bombs: dict[str, bytes]
) -> None:
    """10 minutes of FLAC silence (115 MB of PCM from 100 kB) is refused at once with a reason:
    its STREAMINFO says how much it would become."""
    session_id = await new_session(client, who)
    bomb = bombs["stated"]
    assert len(bomb) < 150_000
    response = await post_audio(client, who, session_id, bomb)
    assert response.status_code == 400, response.text
    assert "decompression bomb" in response.json()["message"]
    assert kept_files(runtime) == []


@pytest.fixture
def bomb_disk(tmp_path: Path, clock: FixedClock) -> Iterator[Runtime]:
    """A runtime whose data directory is a 96 MiB disk: less than a bomb decodes to."""
    data = tmp_path / "data"
    with tmpfs(data, "96m"):
        settings = Settings.load(
            {
                "data_dir": str(data),
                "database_url": f"sqlite:///{tmp_path / 'meta.db'}",
                "public_url": "https://vault.test",
            },
            env={},
        )
        rt = open_runtime(settings, clock=clock, access_log=MemoryAccessLog())
        try:
            yield rt
        finally:
            rt.close()


async def test_a_bomb_without_a_stated_length_fails_while_it_decodes(
    bomb_disk: Runtime, clock: FixedClock, bombs: dict[str, bytes]
) -> None:
    """A FLAC bomb whose length is unknown is taken (202), then fails `failed` with a reason
    while it decodes: on a 96 MiB disk, so a check made only after the whole decode (115 MB)
    would have met a full disk instead; nothing of it stays."""
    async with asgi_client(bomb_disk) as client:
        who = customer(bomb_disk, clock)
        session_id = await new_session(client, who)
        taken = await post_audio(client, who, session_id, bombs["unstated"])
        assert taken.status_code == 202, taken.text
        bomb_disk.worker.run_until_idle()
        session = await client.get(f"/api/v1/ambient/session/{session_id}", headers=who.suki)
        (recording,) = session.json()["recordings"]
        assert recording["status"] == "failed"
        assert "decompression bomb" in recording["failure_reason"]
        assert kept_files(bomb_disk) == [] and leftovers(bomb_disk) == []


# --- the storage quota ------------------------------------------------------------------------


async def test_uploads_past_the_tenants_quota_are_507_in_each_dialect(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer
) -> None:
    """With `tenant set --quota`, an upload that would pass it is refused (Suki, Amigo, tus)
    with 507 and the numbers, and nothing is kept; under it, uploads are taken."""
    runtime.vault.tenants.set_quota(who.tenant, 100_000)
    session_id = await new_session(client, who)
    first = await post_audio(client, who, session_id, tone_wav_bytes(1.0))  # 32 kB
    assert first.status_code == 202
    runtime.worker.run_until_idle()
    big = tone_wav_bytes(3.0)  # 96 kB: 32 + 96 > 100
    suki = await post_audio(client, who, session_id, big)
    assert suki.status_code == 507, suki.text
    assert "retry-after" not in suki.headers
    assert suki.json()["message"].startswith(
        "The storage quota of 100000 bytes would be passed: 32044 bytes are stored"
    )
    amigo = await client.post(
        f"/v1/{who.ws}/calls/CA7/audio",
        params={"channel": "inbound"},
        headers={**who.bearer, "content-type": "audio/wav"},
        content=big,
    )
    assert amigo.status_code == 507 and "storage quota" in amigo.json()["detail"]
    upload_id = await tus_create(client, who, session_id, len(big))
    tus = await tus_patch(client, who, upload_id, 0, big)
    assert tus.status_code == 507 and "storage quota" in tus.json()["message"]
    assert [f for f in kept_files(runtime) if not f.startswith(("audio/", "tus/"))] == []
    small = await post_audio(client, who, session_id, tone_wav_bytes(0.5))
    assert small.status_code == 202


async def test_the_server_default_quota_applies_and_a_tenant_can_be_unlimited(
    tmp_path: Path, clock: FixedClock
) -> None:
    """TAPEVAULT_TENANT_QUOTA is every tenant's quota unless its own says otherwise; 0
    (`--quota unlimited`) lifts it."""
    settings = Settings.load(
        {"data_dir": str(tmp_path / "d"), "public_url": "https://vault.test"},
        env={"TAPEVAULT_TENANT_QUOTA": "50k"},
    )
    assert settings.tenant_quota_bytes == 50 * 1024
    rt = open_runtime(settings, clock=clock, access_log=MemoryAccessLog())
    try:
        async with asgi_client(rt) as client:
            who = customer(rt, clock)
            session_id = await new_session(client, who)
            refused = await post_audio(client, who, session_id, tone_wav_bytes(2.0))  # 64 kB
            assert refused.status_code == 507
            rt.vault.tenants.set_quota(who.tenant, 0)
            taken = await post_audio(client, who, session_id, tone_wav_bytes(2.0))
            assert taken.status_code == 202
    finally:
        rt.close()


async def test_a_compressed_upload_that_decodes_past_the_quota_fails_and_keeps_its_source(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, tmp_path: Path
) -> None:
    """A small FLAC passes the upload's check but decodes past the quota: the recording ends
    `failed` with the quota's reason while decoding, and its received audio is kept (an
    operator who raises the quota can queue it again)."""
    flac = silence_flac(tmp_path / "s.flac", 5, piped=False).read_bytes()  # 960 kB decoded
    runtime.vault.tenants.set_quota(who.tenant, 500_000)
    session_id = await new_session(client, who)
    taken = await post_audio(client, who, session_id, flac)
    assert taken.status_code == 202, taken.text
    runtime.worker.run_until_idle()
    session = await client.get(f"/api/v1/ambient/session/{session_id}", headers=who.suki)
    (recording,) = session.json()["recordings"]
    assert recording["status"] == "failed"
    assert "storage quota of 500000 bytes would be passed" in recording["failure_reason"]
    assert incoming_objects(runtime.vault.store) == [upload_key(recording["recording_id"])]
    assert [f for f in kept_files(runtime) if f.startswith("audio/")] == [
        f"audio/{upload_key(recording['recording_id'])}"
    ]


def test_a_live_stream_past_the_quota_is_refused_with_4507(
    runtime: Runtime, who: Customer, tmp_path: Path
) -> None:
    """A stream cannot start once the quota is used up; its close code says why (4507)."""
    session = runtime.vault.sessions.create_session(who.tenant, SessionKind.AMBIENT)
    spooled = tmp_path / "one.wav"
    spooled.write_bytes(tone_wav_bytes(1.0))
    runtime.vault.ingest.accept_upload(who.tenant, session.session_id, spooled, "wav/pcm_s16le")
    runtime.worker.run_until_idle()
    runtime.vault.tenants.set_quota(who.tenant, 32_044)  # exactly what is stored
    tenant = runtime.repo.get_tenant(who.tenant.partner_id)
    assert tenant is not None and tenant.storage_quota_bytes == 32_044
    with pytest.raises(QuotaExceeded) as refused:
        runtime.vault.ingest.open_stream(
            tenant,
            session.session_id,
            "stream/pcm_s16le",
            "writer",
            sample_rate=16000,
            channels=1,
            bits_per_sample=16,
        )
    assert close_code(refused.value) == 4507


async def test_an_upload_past_the_quota_is_refused_before_its_body_is_read(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer
) -> None:
    """A tenant already past its quota gets the 507 before its (6 MiB, chunked) body is read."""
    session_id = await new_session(client, who)
    assert (await post_audio(client, who, session_id, tone_wav_bytes(1.0))).status_code == 202
    runtime.worker.run_until_idle()
    runtime.vault.tenants.set_quota(who.tenant, 1000)
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(6):
            sent.append(1)
            yield bytes(1 << 20)

    for url, headers in (
        (f"/api/v1/ambient/session/{session_id}/audio", who.suki),
        (f"/v1/{who.ws}/calls/CA9/audio?channel=inbound", who.bearer),
    ):
        sent.clear()
        refused = await client.post(
            url, headers={**headers, "content-type": "audio/wav"}, content=body()
        )
        assert refused.status_code == 507, refused.text
        assert len(sent) <= 1
