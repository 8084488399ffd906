"""Direct delivery on Azurite, which checks its SAS signatures and expiry (moto does not).

A tenant in ``direct`` mode gets the store's own presigned URLs from every dialect: they serve
the right bytes with Range, under the recording's filename; a tampered or expired one is refused
by the store itself. Retention is enforced when a URL is issued, and the issuance is logged.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tapevault import cli
from tapevault.audio_gen import tone_wav_bytes
from tapevault.auth.suki import issue_token
from tapevault.config import Settings
from tapevault.core.access import Action, MemoryAccessLog
from tapevault.core.clock import FixedClock
from tapevault.core.delivery import media_filename
from tapevault.core.model import Delivery, Tenant
from tapevault.errors import InvalidRequest
from tapevault.runtime import Runtime, open_runtime
from tests.dialects import customer, upload_channel
from tests.objectstores import AzuriteServer
from tests.support import with_query

WAV = tone_wav_bytes(2.0)


@pytest.fixture
def azure_runtime(
    azurite_server: AzuriteServer,
    tmp_path: Path,
    clock: FixedClock,
    access_log: MemoryAccessLog,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Runtime]:
    for name, value in azurite_server.env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.load(
        {
            "data_dir": str(tmp_path / "data"),
            "public_url": "https://vault.test",
            "storage_url": azurite_server.new_store_url(),
            "storage_endpoint": azurite_server.endpoint,
        },
        env={},
    )
    rt = open_runtime(settings, clock=clock, access_log=access_log)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
async def client(azure_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=azure_runtime.asgi())
    async with httpx.AsyncClient(transport=transport, base_url="https://vault.test") as c:
        yield c


def direct_tenant(runtime: Runtime) -> Tenant:
    tenant = runtime.vault.tenants.create("clinic", 7 * 86400).tenant
    runtime.vault.tenants.set_delivery(
        tenant, Delivery.DIRECT, store_presigns=runtime.vault.direct.available
    )
    found = runtime.repo.get_tenant(tenant.partner_id)
    assert found is not None and found.delivery is Delivery.DIRECT
    return found


async def uploaded_session(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str]
) -> str:
    created = await client.post("/api/v1/ambient/session/create", headers=headers)
    session_id: str = created.json()["ambient_session_id"]
    answer = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**headers, "content-type": "audio/wav"},
        content=WAV,
    )
    assert answer.status_code == 202
    runtime.worker.run_until_idle()
    return session_id


async def test_direct_urls_are_the_stores_own_and_serve_ranges_under_the_filename(
    client: httpx.AsyncClient,
    azure_runtime: Runtime,
    azurite_server: AzuriteServer,
    clock: FixedClock,
    access_log: MemoryAccessLog,
) -> None:
    """Suki's presigned_url is Azurite's SAS URL: Range is exact, the filename and type are the
    ones written on the object, and the issuance is in the access log as direct."""
    tenant = direct_tenant(azure_runtime)
    headers = {"sdp_suki_token": issue_token(tenant, now=clock.now(), ttl_seconds=3600)}
    session_id = await uploaded_session(client, azure_runtime, headers)
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    assert urls.status_code == 200
    (link,) = urls.json()["recordings"]
    url = link["presigned_url"]
    assert url.startswith(azurite_server.endpoint + "/") and "sig=" in url
    assert link["expires_at"] == int(clock.now()) + 15 * 60

    async with httpx.AsyncClient(timeout=30) as store:
        ranged = await store.get(url, headers={"range": "bytes=100-4195"})
        assert ranged.status_code == 206
        assert ranged.content == WAV[100:4196]
        assert ranged.headers["content-range"] == f"bytes 100-4195/{len(WAV)}"
        assert ranged.headers["content-type"] == "audio/wav"
        recording = azure_runtime.repo.get_recording(link["recording_id"])
        assert recording is not None
        assert ranged.headers["content-disposition"] == (
            f'inline; filename="{media_filename(recording)}"'
        )
        assert media_filename(recording) == f"{session_id}-1.wav"
        # Open ranges (what players send); Azure Blob has no suffix ranges (bytes=-N): in
        # direct mode the store's Range rules apply (README, "Object storage").
        tail = await store.get(url, headers={"range": "bytes=4000-"})
        assert tail.status_code == 206 and tail.content == WAV[4000:]
        whole = await store.get(url)
        assert whole.status_code == 200 and whole.content == WAV

    issued = [e for e in access_log.events if e.action is Action.URLS_ISSUE]
    assert [e.mode for e in issued] == ["direct_stream"]


async def test_a_tampered_or_expired_direct_url_is_refused_by_the_store(
    client: httpx.AsyncClient, azure_runtime: Runtime, clock: FixedClock
) -> None:
    """Azurite checks the SAS: a changed signature, a later expiry or a lapsed URL get 403."""
    tenant = direct_tenant(azure_runtime)
    headers = {"sdp_suki_token": issue_token(tenant, now=clock.now(), ttl_seconds=3600)}
    session_id = await uploaded_session(client, azure_runtime, headers)
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    url = urls.json()["recordings"][0]["presigned_url"]
    sig = dict(parse_qsl(urlsplit(url).query))["sig"]
    tampered = with_query(url, sig=("A" if sig[0] != "A" else "B") + sig[1:])
    extended = with_query(url, se="2099-01-01T00:00:00Z")
    other_blob = url.replace(".wav?", "-other.wav?", 1)

    recording_id = urls.json()["recordings"][0]["recording_id"]
    recording = azure_runtime.repo.get_recording(recording_id)
    assert recording is not None
    now = int(time.time())  # the store judges expiry by its own (real) clock
    short = azure_runtime.vault.direct.url(recording, now + 1, now)
    assert short is not None

    async with httpx.AsyncClient(timeout=30) as store:
        assert (await store.get(url, headers={"range": "bytes=0-9"})).status_code == 206
        for bad in (tampered, extended, other_blob):
            answer = await store.get(bad, headers={"range": "bytes=0-9"})
            assert answer.status_code == 403, bad
        time.sleep(2.5)
        lapsed = await store.get(short, headers={"range": "bytes=0-9"})
        assert lapsed.status_code == 403


async def test_no_direct_url_past_retention_and_urls_end_with_it(
    client: httpx.AsyncClient, azure_runtime: Runtime, clock: FixedClock
) -> None:
    """Retention is enforced when a URL is issued: none once it is over (410), and a URL never
    outlives the recording's retention."""
    tenant = direct_tenant(azure_runtime)
    azure_runtime.vault.tenants.set_delivery(tenant, Delivery.DIRECT, store_presigns=True)
    headers = {"sdp_suki_token": issue_token(tenant, now=clock.now(), ttl_seconds=3600)}
    session_id = await uploaded_session(client, azure_runtime, headers)
    (recording,) = azure_runtime.repo.list_recordings(tenant.partner_id, session_id)
    assert recording.expires_ms is not None
    clock.advance(recording.expires_ms / 1000 - clock.now() - 60)  # a minute of retention left
    headers = {"sdp_suki_token": issue_token(tenant, now=clock.now(), ttl_seconds=3600)}
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    assert urls.status_code == 200
    assert urls.json()["recordings"][0]["expires_at"] == recording.expires_ms // 1000
    clock.advance(120)
    headers = {"sdp_suki_token": issue_token(tenant, now=clock.now(), ttl_seconds=3600)}
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    assert urls.status_code == 410


async def test_a_gateway_tenant_on_the_same_store_gets_gateway_urls(
    client: httpx.AsyncClient, azure_runtime: Runtime, clock: FixedClock
) -> None:
    """Delivery is per tenant: the default stays tapevault's signed URL, proxied from Azure."""
    tenant = azure_runtime.vault.tenants.create("other", 7 * 86400).tenant
    assert tenant.delivery is Delivery.GATEWAY
    headers = {"sdp_suki_token": issue_token(tenant, now=clock.now(), ttl_seconds=3600)}
    session_id = await uploaded_session(client, azure_runtime, headers)
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    url = urls.json()["recordings"][0]["presigned_url"]
    assert url.startswith("https://vault.test/media/")
    ranged = await client.get(
        url.removeprefix("https://vault.test"), headers={"range": "bytes=44-"}
    )
    assert ranged.status_code == 206 and ranged.content == WAV[44:]


def test_direct_is_refused_on_a_local_store(runtime: Runtime, tmp_path: Path) -> None:
    """A directory cannot presign: the service and the CLI say so, and nothing changes."""
    tenant = runtime.vault.tenants.create("clinic", 86400).tenant
    assert not runtime.vault.direct.available
    with pytest.raises(InvalidRequest, match="direct delivery needs an object store"):
        runtime.vault.tenants.set_delivery(
            tenant, Delivery.DIRECT, store_presigns=runtime.vault.direct.available
        )
    data = ["--data-dir", str(runtime.settings.data_dir)]
    data += ["--database-url", runtime.settings.database_url]
    assert (
        cli.main(["tenant", "set", "--tenant", tenant.partner_id, "--delivery", "direct", *data])
        == 1
    )
    found = runtime.repo.get_tenant(tenant.partner_id)
    assert found is not None and found.delivery is Delivery.GATEWAY
    assert (
        cli.main(["tenant", "set", "--tenant", tenant.partner_id, "--delivery", "gateway", *data])
        == 0
    )


async def test_amigo_and_kore_hand_out_direct_urls_too(
    client: httpx.AsyncClient,
    azure_runtime: Runtime,
    azurite_server: AzuriteServer,
    clock: FixedClock,
    access_log: MemoryAccessLog,
) -> None:
    """Amigo's channel URLs and Kore's merged fileUrl are the store's own for a direct tenant
    (the metadata document stays tapevault's); the merged file carries its filename too."""
    who = customer(azure_runtime, clock, "acme")
    azure_runtime.vault.tenants.set_delivery(who.tenant, Delivery.DIRECT, store_presigns=True)
    call = "CAfeedfacefeedfacefeedfacefeedface"
    inbound = tone_wav_bytes(1.0, sample_rate=8000)
    outbound = tone_wav_bytes(1.0, sample_rate=16000, freq=1000.0)
    for channel, body in (("inbound", inbound), ("outbound", outbound)):
        answer = await upload_channel(
            client, azure_runtime, who, call, channel, body, media_start_epoch_ms=1_800_000_000_000
        )
        assert answer.status_code in (200, 201, 202), answer.text
    urls = await client.get(f"/v1/{who.ws}/recordings/{call}/urls", headers=who.bearer)
    assert urls.status_code == 200
    body = urls.json()
    assert body["inbound_url"].startswith(azurite_server.endpoint + "/")
    assert body["outbound_url"].startswith(azurite_server.endpoint + "/")
    assert body["metadata_url"].startswith("https://vault.test/media/")
    merged = await client.get(
        f"/api/public/bot/{who.bot}/v2/recordings",
        params={"sessionId": call, "userId": "agent@example.com"},
        headers={**who.kore, "content-type": "application/json"},
    )
    (entry,) = merged.json()["recording"]
    assert entry["fileUrl"].startswith(azurite_server.endpoint + "/")
    async with httpx.AsyncClient(timeout=30) as store:
        first = await store.get(body["inbound_url"], headers={"range": "bytes=0-99"})
        assert first.status_code == 206 and first.content == inbound[:100]
        mixed = await store.get(entry["fileUrl"], headers={"range": "bytes=0-3"})
        assert mixed.status_code == 206 and mixed.content == b"RIFF"
        assert mixed.headers["content-disposition"].endswith('-merged.wav"')
    modes = {e.action: e.mode for e in access_log.events}
    assert modes[Action.CALL_URLS] == "direct_stream"
    assert modes[Action.MERGED_URLS] == "direct_stream"
