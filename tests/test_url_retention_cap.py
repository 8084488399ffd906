"""No signed URL outlives its recording: every dialect's URLs (Suki streaming and download,
Amigo's channels and metadata document, Kore's merged file) expire at the latest when the
retention of what they grant ends, on SQLite and PostgreSQL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.auth.kore import issue_kore_token
from tapevault.auth.suki import issue_token
from tapevault.core.clock import FixedClock
from tapevault.runtime import Runtime
from tests.dialects import Customer, local, upload_channel

RETENTION = 3600
CALL = "CA0123456789abcdef0123456789abcdef"


def short_lived(runtime: Runtime, clock: FixedClock) -> Customer:
    """A tenant keeping audio one hour, with credentials valid for a day."""
    created = runtime.vault.tenants.create("short", RETENTION)
    tenant = created.tenant
    return Customer(
        tenant=tenant,
        api_key=created.api_key,
        suki={"sdp_suki_token": issue_token(tenant, now=clock.now(), ttl_seconds=86400)},
        kore={"auth": issue_kore_token(tenant, now=clock.now(), ttl_seconds=86400)},
    )


def expiry(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["e"][0])


async def suki_session(client: httpx.AsyncClient, runtime: Runtime, who: Customer) -> str:
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id: str = created.json()["ambient_session_id"]
    for _ in range(2):
        upload = await client.post(
            f"/api/v1/ambient/session/{session_id}/audio",
            headers={**who.suki, "content-type": "audio/wav"},
            content=tone_wav_bytes(0.5),
        )
        assert upload.status_code == 202
    ended = await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=who.suki)
    assert ended.status_code < 300
    runtime.worker.run_until_idle()
    return session_id


@pytest.mark.parametrize("download", ["false", "true"])
@pytest.mark.parametrize("before_end", [11, 15 * 60 + 1, 3600])
async def test_suki_urls_end_with_retention(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock, download: str, before_end: int
) -> None:
    """Asked 11 s before the retention end a URL carries 11 s, not 15 minutes or an hour; asked
    early enough it keeps its full lifetime."""
    who = short_lived(runtime, clock)
    start = int(clock.now())
    session_id = await suki_session(client, runtime, who)
    clock.set(start + RETENTION - before_end)
    answer = await client.get(
        f"/api/v1/ambient/session/{session_id}/recording",
        headers=who.suki,
        params={"download": download},
    )
    assert answer.status_code == 200, answer.text
    lifetime = 3600 if download == "true" else 15 * 60
    expected = min(int(clock.now()) + lifetime, start + RETENTION)
    for entry in answer.json()["recordings"]:
        assert entry["expires_at"] == expected
        assert expiry(entry["presigned_url"]) == expected
    url = local(answer.json()["recordings"][0]["presigned_url"])
    clock.set(expected - 0.001)
    assert (await client.get(url)).status_code == 200
    clock.set(expected + 1)
    assert (await client.get(url)).status_code == 403


async def test_amigo_urls_and_metadata_end_with_retention(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """Amigo's one-hour URLs (both channels and the metadata document) issued 11 s before the
    retention end expire with it, and play until then."""
    who = short_lived(runtime, clock)
    start = int(clock.now())
    for channel in ("inbound", "outbound"):
        sent = await upload_channel(client, runtime, who, CALL, channel, tone_wav_bytes(0.5))
        assert sent.status_code == 202
    clock.set(start + RETENTION - 11)
    answer = await client.get(f"/v1/{who.ws}/recordings/{CALL}/urls", headers=who.bearer)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    for name in ("inbound_url", "outbound_url", "metadata_url"):
        assert expiry(body[name]) == start + RETENTION, name
    clock.set(start + RETENTION - 0.001)
    for name in ("inbound_url", "metadata_url"):
        assert (await client.get(local(body[name]))).status_code == 200, name


async def test_kore_url_ends_with_retention(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """Kore's merged-file URL asked for 11 s before the retention end expires with it."""
    who = short_lived(runtime, clock)
    start = int(clock.now())
    session_id = await suki_session(client, runtime, who)
    clock.set(start + RETENTION - 11)
    for _ in range(3):  # however the merged file is made (at the end or on demand)
        answer = await client.get(
            f"/api/public/bot/{who.bot}/v2/recordings",
            params={"sessionId": session_id},
            headers=who.kore,
        )
        if answer.json()["status"] == "success":
            break
        runtime.worker.run_until_idle()
    body = answer.json()
    assert body["status"] == "success", body
    assert expiry(body["recording"][0]["fileUrl"]) == start + RETENTION
