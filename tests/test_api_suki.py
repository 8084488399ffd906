"""The Suki dialect and the media gateway, end to end in process, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
import jwt
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.auth.suki import issue_token
from tapevault.core.access import Action, MemoryAccessLog
from tapevault.core.clock import FixedClock
from tapevault.core.model import Tenant
from tapevault.core.sources import upload_key
from tapevault.runtime import Runtime
from tests.conftest import need

# Also on PostgreSQL with audio in S3 (moto): see conftest.py.
ON_OBJECT_STORE = True

NOT_READY = {"code": 404, "message": "Recording not found or decryption in progress."}
EXPIRED = "Recording has expired per retention policy."


RUNTIMES: dict[int, Runtime] = {}


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=runtime.asgi())
    async with httpx.AsyncClient(transport=transport, base_url="https://vault.test") as c:
        RUNTIMES[id(c)] = runtime
        yield c
        del RUNTIMES[id(c)]


@pytest.fixture
def partner(runtime: Runtime) -> Tenant:
    return runtime.vault.tenants.create("clinic", 7 * 86400).tenant


def token_for(partner: Tenant, clock: FixedClock, **extra: object) -> dict[str, str]:
    return {"sdp_suki_token": issue_token(partner, now=clock.now(), ttl_seconds=3600, **extra)}  # type: ignore[arg-type]


async def new_session(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.post("/api/v1/ambient/session/create", headers=headers)
    assert response.status_code == 201
    session_id: str = response.json()["ambient_session_id"]
    return session_id


async def upload(
    client: httpx.AsyncClient, headers: dict[str, str], session_id: str, body: bytes
) -> httpx.Response:
    """Upload, then let the worker finish every queued job (as the in-process worker would)."""
    response = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**headers, "content-type": "audio/wav"},
        content=body,
    )
    RUNTIMES[id(client)].worker.run_until_idle()
    return response


async def recording_of(
    client: httpx.AsyncClient, headers: dict[str, str], session_id: str, sequence: int
) -> dict[str, object]:
    session = await client.get(f"/api/v1/ambient/session/{session_id}", headers=headers)
    found: dict[str, object] = session.json()["recordings"][sequence - 1]
    return found


def media_path(url: str) -> str:
    """The presigned URL relative to the test client's base."""
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.netloc == "vault.test"
    return urlunsplit(("", "", parts.path, parts.query, ""))


async def test_full_flow_upload_list_stream(
    client: httpx.AsyncClient, partner: Tenant, clock: FixedClock
) -> None:
    """Create, upload two WAVs, end, list URLs by sequence, and read exact ranges."""
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    first = tone_wav_bytes(2.0, sample_rate=16000)
    second = tone_wav_bytes(1.0, sample_rate=8000, channels=2, bits=24)
    r1 = await upload(client, headers, session_id, first)
    r2 = await upload(client, headers, session_id, second)
    assert r1.status_code == 202 and r2.status_code == 202
    assert r1.json()["status"] == "processing" and r1.json()["sha256"] is None
    assert r1.json()["sequence_number"] == 1 and r2.json()["sequence_number"] == 2
    rec1 = await recording_of(client, headers, session_id, 1)
    rec2 = await recording_of(client, headers, session_id, 2)
    assert rec1["status"] == "available" and rec1["source_format"] == "wav/pcm_s16le"
    assert rec1["sha256"] == hashlib.sha256(first).hexdigest()
    assert rec1["duration_ms"] == 2000 and rec1["sample_rate"] == 16000
    assert rec2["channels"] == 2 and rec2["bits_per_sample"] == 24

    end = await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=headers)
    assert end.status_code == 200 and end.json()["status"] == "completed"

    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    assert urls.status_code == 200
    body = urls.json()
    assert body["is_streamable"] is True
    assert [r["sequence_number"] for r in body["recordings"]] == [1, 2]
    rec = body["recordings"][0]
    assert set(rec) == {"recording_id", "presigned_url", "expires_at", "sequence_number"}
    assert len(rec["recording_id"]) == 26  # a ULID
    assert rec["expires_at"] == int(clock.now()) + 15 * 60

    ranged = await client.get(
        media_path(rec["presigned_url"]), headers={"range": "bytes=1000-1999"}
    )
    assert ranged.status_code == 206
    assert ranged.content == first[1000:2000]
    assert ranged.headers["content-range"] == f"bytes 1000-1999/{len(first)}"
    assert ranged.headers["content-type"] == "audio/wav"
    assert ranged.headers["cache-control"] == "private, no-store"
    whole = await client.get(media_path(rec["presigned_url"]))
    assert whole.status_code == 200 and whole.content == first
    assert "content-disposition" not in whole.headers


async def test_form_filling_ids_are_distinct_and_served(
    client: httpx.AsyncClient, partner: Tenant, clock: FixedClock
) -> None:
    """Form-filling sessions get ids from their own space, and the recording endpoint takes them."""
    headers = token_for(partner, clock)
    ambient = await new_session(client, headers)
    response = await client.post("/api/v1/form-filling/session/create", headers=headers)
    assert response.status_code == 201
    form = response.json()["ambient_session_id"]
    assert form != ambient and form.startswith("ffs-") and not ambient.startswith("ffs-")
    assert (await upload(client, headers, form, tone_wav_bytes(0.5))).status_code == 202
    urls = await client.get(f"/api/v1/ambient/session/{form}/recording", headers=headers)
    assert urls.status_code == 200 and len(urls.json()["recordings"]) == 1


async def test_download_url_lifetime_and_disposition(
    client: httpx.AsyncClient, partner: Tenant, clock: FixedClock
) -> None:
    """download=true (and the seed example's download=True) gives 1-hour attachment URLs."""
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    body = tone_wav_bytes(1.0)
    await upload(client, headers, session_id, body)
    for value in ("true", "True"):
        urls = await client.get(
            f"/api/v1/ambient/session/{session_id}/recording",
            headers=headers,
            params={"download": value},
        )
        rec = urls.json()["recordings"][0]
        assert rec["expires_at"] == int(clock.now()) + 3600
    media = await client.get(media_path(rec["presigned_url"]), headers={"range": "bytes=100-"})
    assert media.status_code == 206 and media.content == body[100:]
    assert media.headers["content-disposition"] == f'attachment; filename="{session_id}-1.wav"'


async def test_streaming_lifetime_grows_with_long_sessions(
    runtime: Runtime, partner: Tenant, clock: FixedClock
) -> None:
    """A session longer than 15 minutes gets its length plus 10 minutes of URL validity."""
    from tapevault.core.model import Recording, RecordingStatus, SessionKind

    vault = runtime.vault
    session = vault.sessions.create_session(partner, SessionKind.AMBIENT)
    runtime.repo.add_recording(
        Recording(
            recording_id="01J0000000000000000000000A",
            session_id=session.session_id,
            partner_id=partner.partner_id,
            sequence_number=1,
            status=RecordingStatus.AVAILABLE,
            storage_key="x/y.wav",
            sample_rate=16000,
            channels=1,
            bits_per_sample=16,
            duration_ms=40 * 60 * 1000 + 1,
            size_bytes=44,
            sha256="0" * 64,
            created_ms=int(clock.now() * 1000),
            expires_ms=int(clock.now() * 1000) + 86400_000,
        )
    )
    links = vault.links.recording_links(partner, session.session_id, download=False)
    assert links[0].expires_at == int(clock.now()) + 40 * 60 + 1 + 10 * 60


@pytest.mark.parametrize(
    ("query", "status"), [("download=maybe", 400), ("download=", 400), ("download=false", 404)]
)
async def test_malformed_download_is_400(
    client: httpx.AsyncClient, partner: Tenant, clock: FixedClock, query: str, status: int
) -> None:
    """A malformed ``download`` value is a 400 with the {code,message} body."""
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    response = await client.get(
        f"/api/v1/ambient/session/{session_id}/recording?{query}", headers=headers
    )
    assert response.status_code == status
    assert response.json()["code"] == status and response.json()["message"]


async def test_not_ready_is_404_with_retry_after(
    client: httpx.AsyncClient, partner: Tenant, clock: FixedClock
) -> None:
    """A session without finished recordings answers the seed's 404 with Retry-After."""
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    response = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    assert response.status_code == 404 and response.json() == NOT_READY
    assert response.headers["retry-after"].isdigit()


async def test_unknown_and_foreign_sessions_look_the_same(
    client: httpx.AsyncClient, runtime: Runtime, partner: Tenant, clock: FixedClock
) -> None:
    """Another partner's session is a 404 exactly like an unknown id: no existence oracle."""
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    await upload(client, headers, session_id, tone_wav_bytes(0.5))
    intruder = runtime.vault.tenants.create("other", 7 * 86400).tenant
    other = token_for(intruder, clock)
    foreign = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=other)
    unknown = await client.get("/api/v1/ambient/session/nope/recording", headers=other)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json() == NOT_READY
    assert (
        await client.get(f"/api/v1/ambient/session/{session_id}", headers=other)
    ).status_code == 404
    assert (await upload(client, other, session_id, tone_wav_bytes(0.5))).status_code == 404
    ended = await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=other)
    assert ended.status_code == 404


async def test_media_url_of_another_partner_is_rejected(
    client: httpx.AsyncClient, runtime: Runtime, partner: Tenant, clock: FixedClock
) -> None:
    """A URL re-targeted at another partner's recording fails (signature covers both)."""
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    await upload(client, headers, session_id, tone_wav_bytes(0.5))
    other = runtime.vault.tenants.create("other", 7 * 86400).tenant
    other_headers = token_for(other, clock)
    other_session = await new_session(client, other_headers)
    await upload(client, other_headers, other_session, tone_wav_bytes(0.5))
    mine = (
        await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    ).json()
    theirs = (
        await client.get(
            f"/api/v1/ambient/session/{other_session}/recording", headers=other_headers
        )
    ).json()
    my_url = urlsplit(mine["recordings"][0]["presigned_url"])
    their_id = theirs["recordings"][0]["recording_id"]
    forged = f"/media/{their_id}.wav?{my_url.query}"
    response = await client.get(forged)
    assert response.status_code == 403 and response.json()["error"] == "url_invalid"


@pytest.mark.parametrize(
    "token_kind",
    ["missing", "garbage", "wrong_secret", "expired", "no_exp", "alg_none", "no_partner"],
)
async def test_bad_tokens_are_401(
    client: httpx.AsyncClient, partner: Tenant, clock: FixedClock, token_kind: str
) -> None:
    """Missing, malformed, wrongly signed or expired tokens get 401 with the seed's body."""
    now = int(clock.now())
    claims = {"partner_id": partner.partner_id, "exp": now + 600}
    tokens = {
        "missing": None,
        "garbage": "not.a.jwt",
        "wrong_secret": jwt.encode(claims, "x" * 32, algorithm="HS256"),
        "expired": jwt.encode({**claims, "exp": now - 61}, partner.jwt_secret, algorithm="HS256"),
        "no_exp": jwt.encode(
            {"partner_id": partner.partner_id}, partner.jwt_secret, algorithm="HS256"
        ),
        "alg_none": jwt.encode(claims, None, algorithm="none"),
        "no_partner": jwt.encode({"exp": now + 600}, partner.jwt_secret, algorithm="HS256"),
    }
    token = tokens[token_kind]
    headers = {} if token is None else {"sdp_suki_token": token}
    response = await client.get("/api/v1/ambient/session/x/recording", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == 401 and isinstance(body["message"], str) and body["message"]


async def test_token_within_leeway_is_accepted(
    client: httpx.AsyncClient, partner: Tenant, clock: FixedClock
) -> None:
    """A token expired less than 60 s ago still passes (leeway), then fails."""
    now = int(clock.now())
    token = jwt.encode({"partner_id": partner.partner_id, "exp": now - 59}, partner.jwt_secret)
    ok = await client.post("/api/v1/ambient/session/create", headers={"sdp_suki_token": token})
    assert ok.status_code == 201
    clock.advance(2)
    late = await client.post("/api/v1/ambient/session/create", headers={"sdp_suki_token": token})
    assert late.status_code == 401


async def test_retention_turns_to_410(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """Past retention the recording endpoint says 410, and so does an unexpired media URL."""
    short = runtime.vault.tenants.create("short", 30).tenant
    headers = token_for(short, clock)
    session_id = await new_session(client, headers)
    await upload(client, headers, session_id, tone_wav_bytes(0.5))
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    url = media_path(urls.json()["recordings"][0]["presigned_url"])
    clock.advance(29)
    assert (await client.get(url)).status_code == 200
    clock.advance(1)
    headers = token_for(short, clock)
    gone = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    assert gone.status_code == 410
    assert gone.json()["code"] == 410 and gone.json()["message"] == EXPIRED
    media = await client.get(url)
    assert media.status_code == 410 and media.json()["reason"] == "expired"


async def test_empty_session_past_retention_is_410(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """A session that never got audio is 404 during retention and 410 after it."""
    short = runtime.vault.tenants.create("short", 10).tenant
    session_id = await new_session(client, token_for(short, clock))
    path = f"/api/v1/ambient/session/{session_id}/recording"
    assert (await client.get(path, headers=token_for(short, clock))).status_code == 404
    clock.advance(10)
    assert (await client.get(path, headers=token_for(short, clock))).status_code == 410


async def test_media_url_expiry_and_tampering_are_403(
    client: httpx.AsyncClient, partner: Tenant, clock: FixedClock
) -> None:
    """An expired URL and an altered URL each get 403 saying which, and to ask again."""
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    await upload(client, headers, session_id, tone_wav_bytes(0.5))
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    url = urls.json()["recordings"][0]["presigned_url"]
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    params["e"] = str(int(params["e"]) + 3600)
    altered = f"{parts.path}?" + "&".join(f"{k}={v}" for k, v in params.items())
    bad = await client.get(altered)
    assert bad.status_code == 403 and bad.json()["error"] == "url_invalid"
    assert "new URL" in bad.json()["message"]
    clock.advance(15 * 60 + 1)
    expired = await client.get(media_path(url))
    assert expired.status_code == 403 and expired.json()["error"] == "url_expired"
    assert "new URL" in expired.json()["message"]


async def test_media_head_safari_probe_and_cors(
    client: httpx.AsyncClient, partner: Tenant, clock: FixedClock
) -> None:
    """HEAD mirrors GET, Safari's bytes=0-1 gets 206, and CORS exposes the Range headers."""
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    body = tone_wav_bytes(0.5)
    await upload(client, headers, session_id, body)
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    url = media_path(urls.json()["recordings"][0]["presigned_url"])
    probe = await client.get(url, headers={"range": "bytes=0-1", "origin": "https://app.test"})
    assert probe.status_code == 206 and probe.content == body[:2]
    assert probe.headers["access-control-allow-origin"] == "*"
    assert "content-range" in probe.headers["access-control-expose-headers"]
    head = await client.head(url, headers={"range": "bytes=0-1"})
    assert head.status_code == 206 and head.content == b""
    assert head.headers["content-range"] == probe.headers["content-range"]
    preflight = await client.options(
        url,
        headers={
            "origin": "https://app.test",
            "access-control-request-method": "GET",
            "access-control-request-headers": "range",
        },
    )
    assert preflight.status_code == 204
    assert "range" in preflight.headers["access-control-allow-headers"]
    etag = probe.headers["etag"]
    not_modified = await client.get(url, headers={"if-none-match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    unsatisfiable = await client.get(url, headers={"range": f"bytes={len(body)}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{len(body)}"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b"", "audio/wav", 400, "empty"),
        (b"RIFF\x00\x00\x00\x00WAVEjunk", "audio/wav", 400, ""),
        (b"hello world, not audio", "audio/wav", 400, "audio"),
        (b"{}", "application/json", 415, "Content-Type"),
    ],
)
async def test_invalid_audio_is_rejected_and_nothing_stored(
    client: httpx.AsyncClient,
    runtime: Runtime,
    partner: Tenant,
    clock: FixedClock,
    body: bytes,
    content_type: str,
    status: int,
    words: str,
) -> None:
    """Bodies that are not acceptable WAV get 400/415 with a message, and leave no recording."""
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    response = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**headers, "content-type": content_type},
        content=body,
    )
    assert response.status_code == status
    assert words in response.json()["message"]
    session = await client.get(f"/api/v1/ambient/session/{session_id}", headers=headers)
    assert session.json()["recordings"] == []
    audio_root = runtime.settings.data_dir / "audio"
    assert not [p for p in audio_root.rglob("*") if p.is_file()]
    assert not list((runtime.settings.data_dir / "spool").iterdir())


async def test_upload_limit_enforced_while_streaming(
    client: httpx.AsyncClient, runtime: Runtime, partner: Tenant, clock: FixedClock
) -> None:
    """A body past the size limit is cut off with 413, even without a Content-Length."""
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    limit = runtime.settings.max_upload_bytes

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // (1 << 20) + 2):
            yield b"\0" * (1 << 20)

    response = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**headers, "content-type": "audio/wav"},
        content=chunks(),
    )
    assert response.status_code == 413
    assert not list((runtime.settings.data_dir / "spool").iterdir())


async def test_upload_to_ended_session_is_409(
    client: httpx.AsyncClient, partner: Tenant, clock: FixedClock
) -> None:
    """An ended session accepts no more audio; status shows created -> in_progress -> completed."""
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    path = f"/api/v1/ambient/session/{session_id}"
    assert (await client.get(path, headers=headers)).json()["status"] == "created"
    await upload(client, headers, session_id, tone_wav_bytes(0.2))
    assert (await client.get(path, headers=headers)).json()["status"] == "in_progress"
    await client.post(f"{path}/end", headers=headers)
    again = await client.post(f"{path}/end", headers=headers)
    assert again.status_code == 200 and again.json()["status"] == "completed"
    late = await upload(client, headers, session_id, tone_wav_bytes(0.2))
    assert late.status_code == 409 and late.json()["code"] == 409


async def test_unexpected_error_is_500_without_trace(
    client: httpx.AsyncClient,
    runtime: Runtime,
    partner: Tenant,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Anything unexpected becomes the seed's 500 body, never a stack trace."""

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database exploded at /secret/path")

    monkeypatch.setattr(runtime.vault.links, "recording_links", boom)
    headers = token_for(partner, clock)
    response = await client.get("/api/v1/ambient/session/x/recording", headers=headers)
    assert response.status_code == 500
    assert response.json() == {"code": 500, "message": "An internal error occurred."}


async def test_provider_id_recorded_with_access(
    client: httpx.AsyncClient, partner: Tenant, clock: FixedClock, access_log: MemoryAccessLog
) -> None:
    """sdp_provider_id is recorded with the access, and the token never is."""
    headers = {**token_for(partner, clock), "sdp_provider_id": "provider-123"}
    session_id = await new_session(client, headers)
    await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    issued = [e for e in access_log.events if e.action is Action.URLS_ISSUE]
    assert issued and issued[-1].actor.provider_id == "provider-123"
    assert issued[-1].actor.partner_id == partner.partner_id
    assert all(headers["sdp_suki_token"] not in repr(e) for e in access_log.events)


async def test_openapi_and_health(client: httpx.AsyncClient) -> None:
    """/openapi.json describes the seed's endpoint with its schemas; /healthz answers."""
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    doc = (await client.get("/openapi.json")).json()
    op = doc["paths"]["/api/v1/ambient/session/{ambient_session_id}/recording"]["get"]
    assert op["operationId"] == "getSessionRecording"
    assert set(op["responses"]) >= {"200", "400", "401", "404", "410", "500"}
    assert "controllers.SessionRecordingResponse" in doc["components"]["schemas"]
    from openapi_spec_validator import validate

    validate(doc)


async def test_compressed_upload_becomes_a_wav_recording(
    client: httpx.AsyncClient, partner: Tenant, clock: FixedClock, tmp_path: Path
) -> None:
    """An Ogg Opus upload (as a browser might send) is decoded and served as PCM WAV."""
    need(shutil.which("ffmpeg") is not None, "ffmpeg is not installed")
    source = tmp_path / "tone.wav"
    source.write_bytes(tone_wav_bytes(2.0, sample_rate=16000))
    opus = tmp_path / "tone.ogg"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(source), "-c:a", "libopus", str(opus)],
        check=True,
        timeout=60,
    )
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    response = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**headers, "content-type": "audio/ogg"},
        content=opus.read_bytes(),
    )
    assert response.status_code == 202 and response.json()["source_format"] == "ogg/opus"
    RUNTIMES[id(client)].worker.run_until_idle()
    rec = await recording_of(client, headers, session_id, 1)
    assert rec["status"] == "available" and rec["sample_rate"] == 48000
    assert abs(int(str(rec["duration_ms"])) - 2000) <= 40
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    media = await client.get(media_path(urls.json()["recordings"][0]["presigned_url"]))
    assert media.content[:4] == b"RIFF" and media.headers["content-type"] == "audio/wav"


async def test_failed_finalization_is_reported(
    client: httpx.AsyncClient, runtime: Runtime, partner: Tenant, clock: FixedClock
) -> None:
    """A recording whose full decode fails ends `failed` with its reason; the session too."""
    headers = token_for(partner, clock)
    session_id = await new_session(client, headers)
    response = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**headers, "content-type": "audio/wav"},
        content=tone_wav_bytes(1.0),
    )
    assert response.status_code == 202
    # The body vanishes before the worker runs (e.g. disk damage): final, not retried.
    assert runtime.vault.store.delete(upload_key(response.json()["recording_id"]))
    runtime.worker.run_until_idle()
    await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=headers)
    session = (await client.get(f"/api/v1/ambient/session/{session_id}", headers=headers)).json()
    assert session["status"] == "failed"
    assert session["recordings"][0]["status"] == "failed"
    assert "missing" in session["recordings"][0]["failure_reason"]
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=headers)
    assert urls.status_code == 404 and "retry-after" not in urls.headers
