"""The Amigo dialect in process, on SQLite and PostgreSQL: URLs, metadata, downloads, keys."""

from __future__ import annotations

import asyncio
import io
import wave
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.core.clock import FixedClock
from tapevault.core.sources import upload_key
from tapevault.runtime import Runtime
from tests.dialects import BASE, Customer, customer, local, upload_channel
from tests.support import incoming_objects

# Also on PostgreSQL with audio in S3 (moto): see conftest.py.
ON_OBJECT_STORE = True

CALL = "CA0123456789abcdef0123456789abcdef"
START = 1_800_000_000_000


@pytest.fixture
def acme(runtime: Runtime, clock: FixedClock) -> Customer:
    return customer(runtime, clock, "acme")


async def two_channel_call(client: httpx.AsyncClient, runtime: Runtime, who: Customer) -> None:
    inbound = await upload_channel(
        client,
        runtime,
        who,
        CALL,
        "inbound",
        tone_wav_bytes(1.0, sample_rate=8000),
        media_start_epoch_ms=START,
        direction="outbound",
        tts_provider="elevenlabs",
    )
    outbound = await upload_channel(
        client,
        runtime,
        who,
        CALL,
        "outbound",
        tone_wav_bytes(2.0, sample_rate=16000),
        media_start_epoch_ms=START + 500,
    )
    assert inbound.status_code == 202 and outbound.status_code == 202, inbound.text


async def test_urls_stream_with_range_and_expire_in_an_hour(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer, clock: FixedClock
) -> None:
    """urls gives absolute signed URLs per channel and for metadata; they honour Range."""
    await two_channel_call(client, runtime, acme)
    response = await client.get(f"/v1/{acme.ws}/recordings/{CALL}/urls", headers=acme.bearer)
    assert response.status_code == 200
    body = response.json()
    assert body["call_sid"] == CALL and body["status"] == "available"
    for name in ("inbound_url", "outbound_url", "metadata_url"):
        assert body[name].startswith(f"{BASE}/media/")
        assert dict(parse_qsl(urlsplit(body[name]).query))["e"] == str(int(clock.now()) + 3600)
    ranged = await client.get(local(body["inbound_url"]), headers={"range": "bytes=0-3"})
    assert ranged.status_code == 206 and ranged.content == b"RIFF"
    document = await client.get(local(body["metadata_url"]))
    assert document.status_code == 200 and document.json()["call_sid"] == CALL
    clock.advance(3601)
    expired = await client.get(local(body["inbound_url"]))
    assert expired.status_code == 403 and expired.json()["error"] == "url_expired"


async def test_metadata_is_computed_from_the_stored_audio(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """Every required field, from the stored channels and what the uploads said."""
    await two_channel_call(client, runtime, acme)
    response = await client.get(f"/v1/{acme.ws}/recordings/{CALL}/metadata", headers=acme.bearer)
    assert response.status_code == 200
    meta = response.json()
    assert meta == {
        "call_sid": CALL,
        "workspace_id": acme.ws,
        "service_id": None,
        "direction": "outbound",
        "duration_seconds": 2.5,  # outbound starts 0.5 s in and lasts 2 s
        "inbound_format": "pcm_s16le",
        "inbound_sample_rate": 8000,
        "outbound_format": "pcm_s16le",
        "outbound_sample_rate": 16000,
        "tts_provider": "elevenlabs",
        "call_start_iso": "2027-01-15T08:00:00.000+00:00",
        "call_end_iso": "2027-01-15T08:00:02.500+00:00",
        "inbound_size_bytes": 44 + 8000 * 2,
        "outbound_size_bytes": 44 + 32000 * 2,
        "media_start_epoch_ms": START,
    }


async def test_one_channel_call_has_a_null_url(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """A channel never uploaded has a null URL and empty facts; the other is served."""
    await upload_channel(
        client, runtime, acme, CALL, "outbound", tone_wav_bytes(1.0, sample_rate=16000)
    )
    body = (await client.get(f"/v1/{acme.ws}/recordings/{CALL}/urls", headers=acme.bearer)).json()
    assert body["inbound_url"] is None and body["outbound_url"]
    meta = (
        await client.get(f"/v1/{acme.ws}/recordings/{CALL}/metadata", headers=acme.bearer)
    ).json()
    assert meta["inbound_sample_rate"] == 0 and meta["inbound_size_bytes"] == 0
    missing = await client.get(
        f"/v1/{acme.ws}/recordings/{CALL}/download/inbound.wav", headers=acme.bearer
    )
    assert missing.status_code == 404 and missing.json() == {"detail": "Recording file not found"}


async def test_download_proxies_the_three_files(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """inbound.wav and outbound.wav are WAV (with Range), metadata.json the document."""
    await two_channel_call(client, runtime, acme)
    base = f"/v1/{acme.ws}/recordings/{CALL}/download"
    inbound = await client.get(f"{base}/inbound.wav", headers=acme.bearer)
    assert inbound.status_code == 200 and inbound.headers["content-type"] == "audio/wav"
    assert 'filename="inbound.wav"' in inbound.headers["content-disposition"]
    with wave.open(io.BytesIO(inbound.content)) as w:
        assert w.getframerate() == 8000 and w.getnframes() == 8000
    outbound = await client.get(f"{base}/outbound.wav", headers=acme.bearer)
    size = 44 + 32000 * 2  # 2 s of 16 kHz 16-bit mono
    assert outbound.status_code == 200 and len(outbound.content) == size
    tail = await client.get(f"{base}/outbound.wav", headers={**acme.bearer, "range": "bytes=-4"})
    assert tail.status_code == 206 and tail.content == outbound.content[-4:]
    assert tail.headers["content-range"] == f"bytes {size - 4}-{size - 1}/{size}"
    meta = await client.get(f"{base}/metadata.json", headers=acme.bearer)
    assert meta.status_code == 200 and meta.json()["outbound_sample_rate"] == 16000


@pytest.mark.parametrize(
    "name",
    [
        "other.wav",
        "../inbound.wav",
        "..%2Finbound.wav",
        "%2E%2E%2Finbound.wav",
        "inbound.wav%00",
        "inbound.wav%2F",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "a/../../inbound.wav",
        "INBOUND.WAV",
        "inbound.wav%20",
    ],
)
async def test_any_other_filename_is_invalid(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer, name: str
) -> None:
    """Traversal, encoded separators, absolute paths and NUL all get 400 Invalid filename.

    Sent as raw ASGI (the request target exactly as a client like ``curl --path-as-is`` sends
    it, decoded the way uvicorn decodes it), since httpx would normalise the dot segments.
    """
    await two_channel_call(client, runtime, acme)
    raw = f"/v1/{acme.ws}/recordings/{CALL}/download/{name}"
    status, body = await raw_get(runtime, raw, acme.bearer)
    assert status == 400, (name, body)
    assert body == b'{"detail":"Invalid filename"}'


async def raw_get(runtime: Runtime, raw_path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One GET through the ASGI app with the path as given (no client-side normalisation)."""
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("vault.test", 443),
        "http_version": "1.1",
        "root_path": "",
    }
    await runtime.asgi()(scope, receive, send)  # type: ignore[arg-type]
    status = int(sent[0]["status"])  # type: ignore[call-overload]
    body = b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]
    return status, body


async def test_unknown_call_workspace_and_validation(
    client: httpx.AsyncClient, acme: Customer
) -> None:
    """404 for an unknown call or workspace; 422 FastAPI-style for a workspace that is no UUID."""
    unknown = await client.get(f"/v1/{acme.ws}/recordings/CAnope/urls", headers=acme.bearer)
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Recording not found"}
    other_ws = "00000000-0000-4000-8000-000000000000"
    assert (
        await client.get(f"/v1/{other_ws}/recordings/{CALL}/urls", headers=acme.bearer)
    ).json() == unknown.json()
    bad = await client.get(f"/v1/not-a-uuid/recordings/{CALL}/metadata", headers=acme.bearer)
    assert bad.status_code == 422
    (error,) = bad.json()["detail"]
    assert error["loc"] == ["path", "workspace_id"] and error["type"] == "uuid_parsing"
    assert error["msg"].startswith("Input should be a valid UUID")


async def test_not_ready_then_available(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """While the upload is processed the call is 404 with Retry-After; then available."""
    response = await client.post(
        f"/v1/{acme.ws}/calls/{CALL}/audio",
        params={"channel": "inbound"},
        headers={**acme.bearer, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.5),
    )
    assert response.status_code == 202 and response.json()["status"] == "processing"
    pending = await client.get(f"/v1/{acme.ws}/recordings/{CALL}/urls", headers=acme.bearer)
    assert pending.status_code == 404 and pending.headers["retry-after"] == "2"
    runtime.worker.run_until_idle()
    ready = await client.get(f"/v1/{acme.ws}/recordings/{CALL}/urls", headers=acme.bearer)
    assert ready.status_code == 200


async def test_upload_rules(client: httpx.AsyncClient, runtime: Runtime, acme: Customer) -> None:
    """A channel takes one recording; channel and parameters are validated FastAPI-style."""
    wav = tone_wav_bytes(0.5)
    first = await upload_channel(client, runtime, acme, CALL, "inbound", wav)
    assert first.status_code == 202
    again = await upload_channel(client, runtime, acme, CALL, "inbound", wav)
    assert again.status_code == 409
    missing = await client.post(
        f"/v1/{acme.ws}/calls/{CALL}/audio", headers=acme.bearer, content=wav
    )
    assert missing.status_code == 422 and missing.json()["detail"][0]["type"] == "missing"
    wrong = await upload_channel(client, runtime, acme, CALL, "both", wav)
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["type"] == "enum"
    bad_start = await upload_channel(
        client, runtime, acme, CALL, "outbound", wav, media_start_epoch_ms="soon"
    )
    assert bad_start.status_code == 422
    bad_service = await upload_channel(
        client, runtime, acme, CALL, "outbound", wav, service_id="not-a-uuid"
    )
    assert bad_service.status_code == 422
    assert bad_service.json()["detail"][0]["loc"] == ["query", "service_id"]
    not_audio = await upload_channel(client, runtime, acme, CALL, "outbound", b"hello" * 100)
    assert not_audio.status_code == 400  # audio/wav that is not audio (README: "Uploads")
    assert "not audio" in not_audio.json()["detail"]
    bad_sid = await upload_channel(client, runtime, acme, "CA bad sid!", "outbound", wav)
    assert bad_sid.status_code == 400 and "callSid" in bad_sid.json()["detail"]
    urls = await client.get(f"/v1/{acme.ws}/recordings/{CALL}/urls", headers=acme.bearer)
    assert urls.json()["outbound_url"] is None  # no refused upload was kept


async def test_recording_turned_off_is_503(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """A workspace with call recording off answers 503 on its own calls, 404 stays 404."""
    await two_channel_call(client, runtime, acme)
    runtime.vault.tenants.set_recording_enabled(acme.tenant, False)
    off = await client.get(f"/v1/{acme.ws}/recordings/{CALL}/urls", headers=acme.bearer)
    assert off.status_code == 503 and off.json() == {"detail": "Call recording not configured"}
    other_ws = "00000000-0000-4000-8000-000000000000"
    foreign = await client.get(f"/v1/{other_ws}/recordings/{CALL}/urls", headers=acme.bearer)
    assert foreign.status_code == 404


async def test_api_keys_are_shown_once_listed_by_prefix_and_revoked_at_once(
    client: httpx.AsyncClient, acme: Customer
) -> None:
    """Create (admin only), list without secrets, revoke: the revoked key fails next request."""
    created = await client.post(
        f"/v1/{acme.ws}/api-keys", headers=acme.bearer, json={"name": "qa", "role": "member"}
    )
    assert created.status_code == 201
    key = created.json()
    assert key["api_key"].startswith(key["prefix"]) and key["role"] == "member"
    member = {"authorization": f"Bearer {key['api_key']}"}
    assert (
        await client.get(f"/v1/{acme.ws}/recordings/{CALL}/urls", headers=member)
    ).status_code == 404
    forbidden = await client.post(f"/v1/{acme.ws}/api-keys", headers=member, json={})
    assert forbidden.status_code == 403
    listed = (await client.get(f"/v1/{acme.ws}/api-keys", headers=acme.bearer)).json()
    assert {k["id"] for k in listed["api_keys"]} >= {key["id"]}
    assert all("api_key" not in k for k in listed["api_keys"])
    assert key["api_key"] not in str(listed) and acme.api_key not in str(listed)
    revoked = await client.delete(f"/v1/{acme.ws}/api-keys/{key['id']}", headers=acme.bearer)
    assert revoked.status_code == 204
    after = await client.get(f"/v1/{acme.ws}/recordings/{CALL}/urls", headers=member)
    assert after.status_code == 401 and after.headers["www-authenticate"] == "Bearer"
    again = await client.delete(f"/v1/{acme.ws}/api-keys/{key['id']}", headers=acme.bearer)
    assert again.status_code == 404
    invalid = await client.post(f"/v1/{acme.ws}/api-keys", headers=acme.bearer, content=b"{")
    assert invalid.status_code == 422


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer tvk_nope", "bearer " + "x" * 5000],
)
async def test_bad_credentials_are_401(
    client: httpx.AsyncClient, acme: Customer, authorization: str | None
) -> None:
    """Missing, malformed, unknown or oversized keys: 401 with FastAPI's detail."""
    headers = {} if authorization is None else {"authorization": authorization}
    response = await client.get(f"/v1/{acme.ws}/recordings/{CALL}/urls", headers=headers)
    assert response.status_code == 401 and "detail" in response.json()
    assert response.headers["www-authenticate"] == "Bearer"


async def test_concurrent_uploads_of_one_channel_get_it_once(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """Ten uploads of one call's inbound channel at once, three times over: exactly one 202 and
    nine 409s each time (the database decides, not a check-then-insert), the call holds one
    inbound recording, and the losers leave no spooled or incoming file behind."""
    wav = tone_wav_bytes(0.5)
    spool = runtime.context.spool.directory
    for trial in range(3):
        call_sid = f"CA{trial:032x}"

        async def send(call_sid: str = call_sid) -> httpx.Response:
            return await client.post(
                f"/v1/{acme.ws}/calls/{call_sid}/audio",
                params={"channel": "inbound"},
                headers={**acme.bearer, "content-type": "audio/wav"},
                content=wav,
            )

        answers = await asyncio.gather(*(send() for _ in range(10)))
        codes = sorted(a.status_code for a in answers)
        assert codes == [202] + [409] * 9, (trial, codes)
        for refused in (a for a in answers if a.status_code == 409):
            assert refused.json() == {
                "detail": "The inbound channel of this call already has audio."
            }
        (winner,) = (a.json()["recording_id"] for a in answers if a.status_code == 202)
        assert incoming_objects(runtime.vault.store) == [upload_key(winner)]
        assert list(spool.iterdir()) == []
        runtime.worker.run_until_idle()
        session = runtime.repo.get_session_by_external_id(acme.tenant.partner_id, call_sid)
        assert session is not None
        held = runtime.repo.list_recordings(acme.tenant.partner_id, session.session_id)
        assert [(r.recording_id, r.channel) for r in held] == [(winner, "inbound")]
        assert incoming_objects(runtime.vault.store) == []


async def test_a_failed_channel_may_be_uploaded_again(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """The unique channel rule spares failed recordings: a channel whose upload failed in the
    worker takes a new one (202), which is then served."""
    first = await upload_channel(client, runtime, acme, CALL, "inbound", b"RIFF" + b"\0" * 40)
    if first.status_code == 202:  # refused at once or failed in the worker: both may be retried
        runtime.worker.run_until_idle()
    sent = await client.post(
        f"/v1/{acme.ws}/calls/{CALL}/audio",
        params={"channel": "inbound"},
        headers={**acme.bearer, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.5),
    )
    assert sent.status_code == 202
    runtime.vault.store.put(upload_key(sent.json()["recording_id"]), [b"damaged" * 10])
    runtime.worker.run_until_idle()
    again = await upload_channel(client, runtime, acme, CALL, "inbound", tone_wav_bytes(0.5))
    assert again.status_code == 202, again.text
    urls = await client.get(f"/v1/{acme.ws}/recordings/{CALL}/urls", headers=acme.bearer)
    assert urls.status_code == 200 and again.json()["recording_id"] in urls.json()["inbound_url"]
