"""The Kore dialect in process, on SQLite and PostgreSQL: statuses, credentials, merged audio."""

from __future__ import annotations

import io
import wave

import httpx
import jwt
import numpy as np
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.core.clock import FixedClock
from tapevault.core.sources import upload_key
from tapevault.runtime import Runtime
from tests.dialects import Customer, customer, local, upload_channel

# Also on PostgreSQL with audio in S3 (moto): see conftest.py.
ON_OBJECT_STORE = True

CALL = "CAfeedfacefeedfacefeedfacefeedface"
START = 1_800_000_000_000


@pytest.fixture
def acme(runtime: Runtime, clock: FixedClock) -> Customer:
    return customer(runtime, clock, "acme")


async def kore(client: httpx.AsyncClient, who: Customer, session_id: str) -> httpx.Response:
    return await client.get(
        f"/api/public/bot/{who.bot}/v2/recordings",
        params={"sessionId": session_id, "userId": "agent@example.com"},
        headers={**who.kore, "content-type": "application/json"},
    )


def pcm_of(wav_bytes: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(wav_bytes)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"), w.getframerate()


def window(samples: np.ndarray, rate: int, start_ms: int, end_ms: int) -> np.ndarray:
    return samples[start_ms * rate // 1000 : end_ms * rate // 1000].astype(np.float64)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


async def test_merged_call_holds_both_voices_at_the_right_times(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """The caller (440 Hz, 8 kHz, at 0 s) and the agent (1 kHz, 16 kHz, at 1.5 s) are mixed on
    one timeline at the common rate: energy and pitch per 100 ms window say who speaks when."""
    caller = tone_wav_bytes(1.0, sample_rate=8000, freq=440.0)
    agent = tone_wav_bytes(1.0, sample_rate=16000, freq=1000.0)
    await upload_channel(client, runtime, acme, CALL, "inbound", caller, media_start_epoch_ms=START)
    await upload_channel(
        client, runtime, acme, CALL, "outbound", agent, media_start_epoch_ms=START + 1500
    )
    response = await kore(client, acme, CALL)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    (entry,) = body["recording"]
    assert entry["fileName"] == f"{CALL}-merged.wav"
    audio = await client.get(local(entry["fileUrl"]))
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    samples, rate = pcm_of(audio.content)
    assert rate == 16000 and abs(len(samples) - int(2.5 * rate)) <= rate // 100
    loud = 0.3 * 32767 / np.sqrt(2) / 2
    for start in range(0, 2500, 100):
        part = window(samples, rate, start + 10, start + 90)
        if start < 1000:
            assert rms(part) > loud and abs(dominant_hz(part, rate) - 440) < 30, start
        elif start < 1500:
            assert rms(part) < 50, start  # nobody speaks
        else:
            assert rms(part) > loud and abs(dominant_hz(part, rate) - 1000) < 30, start


async def test_ambient_session_segments_are_joined_in_order(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """An ambient session's recordings, which carry no clock, are merged back to back."""
    created = await client.post("/api/v1/ambient/session/create", headers=acme.suki)
    session_id = created.json()["ambient_session_id"]
    for seconds, freq in ((0.5, 300.0), (1.0, 2000.0)):
        await client.post(
            f"/api/v1/ambient/session/{session_id}/audio",
            headers={**acme.suki, "content-type": "audio/wav"},
            content=tone_wav_bytes(seconds, sample_rate=16000, freq=freq),
        )
    runtime.worker.run_until_idle()
    first = (await kore(client, acme, session_id)).json()
    assert first["status"] == "media_in_progress"  # ambient merges are made on demand
    runtime.worker.run_until_idle()
    ready = (await kore(client, acme, session_id)).json()
    assert ready["status"] == "success"
    samples, rate = pcm_of((await client.get(local(ready["recording"][0]["fileUrl"]))).content)
    assert len(samples) == int(1.5 * rate)
    assert abs(dominant_hz(window(samples, rate, 0, 500), rate) - 300) < 30
    assert abs(dominant_hz(window(samples, rate, 500, 1500), rate) - 2000) < 30


async def test_statuses_follow_the_recordings(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """media_unavailable, media_in_progress (with Retry-After), success with the one channel
    itself (never mixed), then a merge of both when a channel arrives later; an unknown session
    is media_unavailable."""
    assert (await kore(client, acme, "no-such-session")).json() == {
        "status": "media_unavailable",
        "recording": [],
    }
    inbound = await client.post(
        f"/v1/{acme.ws}/calls/{CALL}/audio",
        params={"channel": "inbound"},
        headers={**acme.bearer, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.5),
    )
    processing = await kore(client, acme, CALL)
    assert processing.json()["status"] == "media_in_progress"
    assert processing.headers["retry-after"] == "2"
    runtime.worker.run_until_idle()
    first = (await kore(client, acme, CALL)).json()
    assert first["status"] == "success"
    single = first["recording"][0]["fileUrl"]
    assert f"/media/{inbound.json()['recording_id']}.wav?" in single
    session_id = runtime.vault.sessions.find_session(acme.tenant, CALL).session_id  # type: ignore[union-attr]
    assert runtime.repo.get_merged(acme.tenant.partner_id, session_id) is None
    await upload_channel(client, runtime, acme, CALL, "outbound", tone_wav_bytes(1.0))
    second = (await kore(client, acme, CALL)).json()
    assert second["status"] == "success"  # merged when the second channel was processed
    merged = runtime.repo.get_merged(acme.tenant.partner_id, session_id)
    assert (
        merged is not None
        and f"/media/{merged.recording_id}.wav?" in (second["recording"][0]["fileUrl"])
    )
    samples, rate = pcm_of((await client.get(local(second["recording"][0]["fileUrl"]))).content)
    assert len(samples) == int(1.5 * rate)  # channels without a start time: back to back
    assert (await client.get(local(single))).status_code == 200  # the channel itself, unchanged


async def test_an_ended_session_is_success_at_the_first_request(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """The seed's promise: a session that ended and whose recordings the worker processed is
    `success` at the first Kore request, whether it ended before or after the processing."""
    for end_first in (False, True):
        created = await client.post("/api/v1/ambient/session/create", headers=acme.suki)
        session_id = created.json()["ambient_session_id"]
        for seconds in (0.5, 1.0):
            sent = await client.post(
                f"/api/v1/ambient/session/{session_id}/audio",
                headers={**acme.suki, "content-type": "audio/wav"},
                content=tone_wav_bytes(seconds, sample_rate=16000),
            )
            assert sent.status_code == 202
        if not end_first:
            runtime.worker.run_until_idle()
        ended = await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=acme.suki)
        assert ended.status_code < 300
        runtime.worker.run_until_idle()
        answer = (await kore(client, acme, session_id)).json()
        assert answer["status"] == "success", (end_first, answer)
        samples, rate = pcm_of((await client.get(local(answer["recording"][0]["fileUrl"]))).content)
        assert len(samples) == int(1.5 * rate), end_first


async def test_a_single_recording_is_served_unmixed(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """A session of one recording needs no merge: the first request after processing answers
    success with that recording's own URL, its bytes exactly as uploaded, and no merge job."""
    created = await client.post("/api/v1/ambient/session/create", headers=acme.suki)
    session_id = created.json()["ambient_session_id"]
    body = tone_wav_bytes(0.5, sample_rate=8000)
    sent = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**acme.suki, "content-type": "audio/wav"},
        content=body,
    )
    await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=acme.suki)
    runtime.worker.run_until_idle()
    answer = (await kore(client, acme, session_id)).json()
    assert answer["status"] == "success"
    url = answer["recording"][0]["fileUrl"]
    assert f"/media/{sent.json()['recording_id']}.wav?" in url
    assert (await client.get(local(url))).content == body
    assert runtime.repo.get_merged(acme.tenant.partner_id, session_id) is None
    assert runtime.worker.run_until_idle() == 0  # the request queued nothing either


async def test_a_replaced_rendition_is_never_changed(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """A session still open is merged on request; a later upload makes a new rendition under
    a new id, and the old one's URL stops serving (404) rather than serving other audio."""
    created = await client.post("/api/v1/ambient/session/create", headers=acme.suki)
    session_id = created.json()["ambient_session_id"]
    urls = []
    for uploads in (2, 1):
        for _ in range(uploads):
            sent = await client.post(
                f"/api/v1/ambient/session/{session_id}/audio",
                headers={**acme.suki, "content-type": "audio/wav"},
                content=tone_wav_bytes(0.5),
            )
            assert sent.status_code == 202
        runtime.worker.run_until_idle()
        assert (await kore(client, acme, session_id)).json()["status"] == "media_in_progress"
        runtime.worker.run_until_idle()
        answer = (await kore(client, acme, session_id)).json()
        assert answer["status"] == "success"
        urls.append(answer["recording"][0]["fileUrl"])
    assert urls[0] != urls[1]
    assert (await client.get(local(urls[0]))).status_code == 404
    assert (await client.get(local(urls[1]))).status_code == 200


async def test_failed_processing_is_reported(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """A session whose only recording failed in the worker (damage found by the full decode)
    answers failed with the reason, and no Retry-After."""
    created = await client.post("/api/v1/ambient/session/create", headers=acme.suki)
    session_id = created.json()["ambient_session_id"]
    upload = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**acme.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(1.0),
    )
    assert upload.status_code == 202
    runtime.vault.store.put(upload_key(upload.json()["recording_id"]), [b"damaged" * 10])
    runtime.worker.run_until_idle()
    response = await kore(client, acme, session_id)
    body = response.json()
    assert body["status"] == "failed" and body["recording"] == []
    assert "WAV" in body["message"] or "audio" in body["message"]
    assert "retry-after" not in response.headers


@pytest.mark.parametrize(
    "case",
    ["missing", "garbage", "wrong_secret", "no_app_id", "unknown_app", "alg_none", "expired"],
)
async def test_bad_jwts_are_401_in_kores_error_shape(
    client: httpx.AsyncClient, acme: Customer, clock: FixedClock, case: str
) -> None:
    """Every kind of bad auth header gets 401 {"errors":[{"msg","code":401}]}."""
    now = int(clock.now())
    claims = {"appId": acme.tenant.kore_client_id, "sub": "x"}
    secret = acme.tenant.kore_client_secret
    token = {
        "missing": None,
        "garbage": "not.a.jwt",
        "wrong_secret": jwt.encode(claims, "another-secret-of-32-bytes-length!", "HS256"),
        "no_app_id": jwt.encode({"sub": "x"}, secret, "HS256"),
        "unknown_app": jwt.encode({**claims, "appId": "cs-unknown"}, secret, "HS256"),
        "alg_none": jwt.encode(claims, None, "none"),
        "expired": jwt.encode({**claims, "exp": now - 120}, secret, "HS256"),
    }[case]
    headers = {} if token is None else {"auth": token}
    response = await client.get(
        f"/api/public/bot/{acme.bot}/v2/recordings", params={"sessionId": CALL}, headers=headers
    )
    assert response.status_code == 401
    (error,) = response.json()["errors"]
    assert error["code"] == 401 and error["msg"]


async def test_token_without_exp_is_accepted_and_request_errors(
    client: httpx.AsyncClient, acme: Customer
) -> None:
    """Kore's own recipe (appId only) works; a missing sessionId is 400; a foreign bot 404."""
    token = jwt.encode({"appId": acme.tenant.kore_client_id}, acme.tenant.kore_client_secret)
    url = f"/api/public/bot/{acme.bot}/v2/recordings"
    ok = await client.get(url, params={"sessionId": CALL}, headers={"auth": token})
    assert ok.status_code == 200 and ok.json()["status"] == "media_unavailable"
    missing = await client.get(url, headers={"auth": token})
    assert missing.status_code == 400
    assert missing.json() == {"errors": [{"msg": "sessionId is required.", "code": 400}]}
    bot = await client.get(
        "/api/public/bot/st-unknown/v2/recordings",
        params={"sessionId": CALL},
        headers={"auth": token},
    )
    assert bot.status_code == 404
    post = await client.post(url, params={"sessionId": CALL}, headers={"auth": token})
    assert post.status_code == 405


async def test_a_live_stream_is_call_in_progress(
    client: httpx.AsyncClient, runtime: Runtime, acme: Customer
) -> None:
    """While a stream still writes to the session: the seed's call_in_progress (Retry-After 5);
    once it ends, media_in_progress while the recording is made."""
    created = await client.post("/api/v1/ambient/session/create", headers=acme.suki)
    session_id = created.json()["ambient_session_id"]
    live = runtime.vault.ingest.open_stream(
        acme.tenant,
        session_id,
        "stream/pcm_s16le",
        runtime.context.process_id,
        sample_rate=16000,
        channels=1,
        bits_per_sample=16,
    )
    answer = await kore(client, acme, session_id)
    assert answer.status_code == 200
    assert answer.json() == {"status": "call_in_progress", "recording": []}
    assert answer.headers["retry-after"] == "5"
    runtime.vault.ingest.close_stream(live)
    ended = await kore(client, acme, session_id)
    assert ended.json()["status"] == "media_in_progress"
    assert ended.headers["retry-after"] == "2"
