"""Waveform peaks end to end, on SQLite and PostgreSQL: computed at finalization, served through
a signed ``/media/{id}.peaks.json`` URL with the audio's checks, listed in the native session
views, removed with the audio, and never the reason a recording fails."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import numpy as np
import pytest

from tapevault import cli
from tapevault.config import Settings
from tapevault.core.access import Action, MemoryAccessLog
from tapevault.core.clock import FixedClock
from tapevault.core.model import Recording, RecordingStatus
from tapevault.core.peaks import RESOLUTIONS, has_peaks, peaks_keys
from tapevault.core.signing import UrlMode
from tapevault.errors import NotFound, Subject
from tapevault.ingest import peaks as ingest_peaks
from tapevault.runtime import Runtime, open_runtime
from tapevault.storage import open_store
from tests.dialects import Customer, asgi_client, customer, local, upload_channel
from tests.support import LOUD, loud_pixels, speech_like, wav_bytes
from tests.support import PEAKS_RATE as RATE

# Also on PostgreSQL with audio in S3 (moto): see conftest.py.
ON_OBJECT_STORE = True

ORIGIN = "https://app.example"


async def recorded(client: httpx.AsyncClient, runtime: Runtime, who: Customer) -> Recording:
    """One finished 10 s recording (tone in the ``LOUD`` stretches) of an ended session."""
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id: str = created.json()["ambient_session_id"]
    upload = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=wav_bytes(speech_like()),
    )
    assert upload.status_code == 202, upload.text
    runtime.worker.run_until_idle()
    await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=who.suki)
    [recording] = runtime.repo.list_recordings(who.tenant.partner_id, session_id)
    assert recording.status is RecordingStatus.AVAILABLE
    return recording


def peaks_url(runtime: Runtime, who: Customer, recording: Recording, clock: FixedClock) -> str:
    url = runtime.vault.links.peaks_link(who.tenant, recording, int(clock.now()) + 600)
    assert url is not None
    return local(url)


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return f"{parts.path}?{urlencode({**query, **changes})}"


async def test_peaks_are_served_in_audiowaveform_layout(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock, access_log: MemoryAccessLog
) -> None:
    """The signed URL answers the stored peaks: JSON, strong ETag, CORS, the loud stretches at
    their times, each resolution through ?spp=, 304 on revalidation, one access record each."""
    who = customer(runtime, clock)
    recording = await recorded(client, runtime, who)
    url = peaks_url(runtime, who, recording, clock)
    assert urlsplit(url).path == f"/media/{recording.recording_id}.peaks.json"
    assert parse_qs(urlsplit(url).query)["m"] == [UrlMode.PEAKS.value]
    answer = await client.get(url, headers={"origin": ORIGIN})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["access-control-allow-origin"] in (ORIGIN, "*")
    etag = answer.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    doc = answer.json()
    # 10 s: no resolution gives 1000 pixels, so the default is the finest.
    assert (doc["version"], doc["channels"], doc["bits"], doc["sample_rate"]) == (2, 1, 8, RATE)
    assert doc["samples_per_pixel"] == 256 and len(doc["data"]) == 2 * doc["length"]
    found = loud_pixels(np.array(doc["data"][1::2], dtype=np.int8), 256)
    assert [(round(a, 1), round(b, 1)) for a, b in found] == [(2.0, 4.0), (7.0, 7.5)] == list(LOUD)
    for spp in RESOLUTIONS:
        one = await client.get(with_query(url, spp=str(spp)))
        assert one.status_code == 200 and one.json()["samples_per_pixel"] == spp
        assert one.json()["length"] == -(-10 * RATE // spp)
    again = await client.get(url, headers={"if-none-match": etag})
    assert again.status_code == 304
    reads = [e for e in access_log.events if e.action is Action.MEDIA_PEAKS]
    assert len(reads) == 2 + len(RESOLUTIONS)
    assert {e.recording_id for e in reads} == {recording.recording_id}
    assert {e.actor.partner_id for e in reads} == {who.tenant.partner_id}


async def test_session_views_say_whether_peaks_are_available(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """``peaks_available`` per recording in the session and its recordings list, true once
    computed, false when they are missing (then ``peaks_link`` is None)."""
    who = customer(runtime, clock)
    recording = await recorded(client, runtime, who)
    paths = (
        f"/api/v1/sessions/{recording.session_id}",
        f"/api/v1/sessions/{recording.session_id}/recordings",
    )
    for path in paths:
        answer = await client.get(path, headers=who.bearer)
        assert answer.status_code == 200, answer.text
        assert [r["peaks_available"] for r in answer.json()["recordings"]] == [True]
    for key in peaks_keys(recording.storage_key):
        runtime.vault.store.delete(key)
    for path in paths:
        answer = await client.get(path, headers=who.bearer)
        assert [r["peaks_available"] for r in answer.json()["recordings"]] == [False]
    assert runtime.vault.links.peaks_link(who.tenant, recording, int(clock.now()) + 60) is None


async def test_peaks_url_refused_when_altered_expired_or_foreign(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """The audio's checks: an altered URL or a mode swap is 403 invalid, an expired one 403
    expired, another tenant's signature 404; an unknown resolution 400."""
    who = customer(runtime, clock)
    other = customer(runtime, clock, "other")
    recording = await recorded(client, runtime, who)
    url = peaks_url(runtime, who, recording, clock)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    altered = await client.get(with_query(url, e=str(int(query["e"]) + 1)))
    assert altered.status_code == 403 and altered.json()["error"] == "url_invalid"
    assert (await client.get(with_query(url, s="A" * 43))).status_code == 403
    # A peaks URL grants no audio, and an audio URL grants no peaks.
    audio = url.replace(".peaks.json", ".wav")
    assert (await client.get(audio)).status_code == 403
    [link] = runtime.vault.links.recording_links(who.tenant, recording.session_id, download=False)
    stream_as_peaks = local(link.url).replace(".wav", ".peaks.json")
    refused = await client.get(stream_as_peaks)
    assert refused.status_code == 403 and refused.json()["error"] == "url_invalid"
    foreign = runtime.vault.keys.signer().sign(
        recording.recording_id, UrlMode.PEAKS, int(clock.now()) + 600, other.tenant.partner_id
    )
    answer = await client.get(f"/media/{recording.recording_id}.peaks.json?{foreign}")
    assert answer.status_code == 404
    with pytest.raises(NotFound) as info:
        runtime.vault.links.peaks_link(other.tenant, recording, int(clock.now()) + 600)
    assert info.value.subject is Subject.RECORDING
    for bad in ("512", "0", "-256", "256.0", "x" * 5000):
        answer = await client.get(with_query(url, spp=bad))
        assert answer.status_code == 400 and "spp" in answer.json()["message"]
    clock.set(int(query["e"]) + 1)
    expired = await client.get(url)
    assert expired.status_code == 403 and expired.json()["error"] == "url_expired"


async def test_peaks_go_with_the_audio_on_delete(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """After DELETE the peaks URL answers 410 deleted and no peaks object is left."""
    who = customer(runtime, clock)
    recording = await recorded(client, runtime, who)
    url = peaks_url(runtime, who, recording, clock)
    assert (await client.get(url)).status_code == 200
    deleted = await client.delete(
        f"/api/v1/recordings/{recording.recording_id}", headers=who.bearer
    )
    assert deleted.status_code == 200, deleted.text
    answer = await client.get(url)
    assert answer.status_code == 410 and answer.json()["reason"] == "deleted"
    assert [runtime.vault.store.stat(k) for k in peaks_keys(recording.storage_key)] == [None] * 3


async def test_peaks_go_with_the_audio_at_retention(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """Past retention a peaks URL (even one signed to outlive it) answers 410 expired, and the
    purge removes the peaks objects with the audio."""
    who = customer(runtime, clock)
    recording = await recorded(client, runtime, who)
    long_lived = runtime.vault.keys.signer().sign(
        recording.recording_id,
        UrlMode.PEAKS,
        recording.expires_ms // 1000 + 86400,
        who.tenant.partner_id,
    )
    url = f"/media/{recording.recording_id}.peaks.json?{long_lived}"
    assert (await client.get(url)).status_code == 200
    clock.set(recording.expires_ms / 1000 + 1)
    runtime.vault.cache.forget()
    answer = await client.get(url)
    assert answer.status_code == 410 and answer.json()["reason"] == "expired"
    assert has_peaks(runtime.vault.store, recording.storage_key)
    assert runtime.context.retention.purge_due() >= 1
    assert [runtime.vault.store.stat(k) for k in peaks_keys(recording.storage_key)] == [None] * 3
    assert runtime.vault.store.stat(recording.storage_key) is None


async def test_failing_peaks_never_fail_the_recording(
    client: httpx.AsyncClient,
    runtime: Runtime,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When computing peaks raises, the recording is still AVAILABLE and playable, the failure
    is logged, and it simply has no peaks (a backfill computes them later)."""

    def broken(*args: object) -> object:
        raise MemoryError("no room for peaks")

    monkeypatch.setattr(ingest_peaks, "compute_peaks", broken)
    who = customer(runtime, clock)
    with caplog.at_level(logging.WARNING, logger="tapevault.peaks"):
        recording = await recorded(client, runtime, who)
    assert "waveform peaks" in caplog.text
    assert not has_peaks(runtime.vault.store, recording.storage_key)
    assert runtime.vault.links.peaks_link(who.tenant, recording, int(clock.now()) + 60) is None
    [link] = runtime.vault.links.recording_links(who.tenant, recording.session_id, download=False)
    assert (await client.get(local(link.url))).status_code == 200
    monkeypatch.undo()
    assert ingest_peaks.backfill(runtime.vault.store, [recording]) == (1, 0)
    assert has_peaks(runtime.vault.store, recording.storage_key)
    assert ingest_peaks.backfill(runtime.vault.store, [recording]) == (0, 0)


def test_backfill_command_computes_missing_peaks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tapevault peaks backfill` gives peaks to a recording finalized without them (before
    peaks existed), and a second run has nothing left to do."""
    settings = Settings.load({"data_dir": str(tmp_path / "data")}, env={})
    clock = FixedClock(time.time())
    runtime = open_runtime(settings, clock=clock)
    try:
        who = customer(runtime, clock)

        async def upload() -> Recording:
            async with asgi_client(runtime) as client:
                return await recorded(client, runtime, who)

        recording = asyncio.run(upload())
        for key in peaks_keys(recording.storage_key):
            runtime.vault.store.delete(key)
    finally:
        runtime.close()
    data = ["--data-dir", str(settings.data_dir)]
    assert cli.main(["peaks", "backfill", "--tenant", "someone-else", *data]) == 0
    assert "of 0 recording(s); 0 failed" in capsys.readouterr().out
    assert cli.main(["peaks", "backfill", "--tenant", who.tenant.partner_id, *data]) == 0
    assert "of 1 recording(s); 0 failed" in capsys.readouterr().out
    assert cli.main(["peaks", "backfill", *data]) == 0
    assert "of 0 recording(s); 0 failed" in capsys.readouterr().out
    assert has_peaks(open_store(settings.storage_url), recording.storage_key)


async def test_merged_rendition_has_peaks_that_go_with_it(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """A call's merged rendition gets peaks too (both channels' audio at their times), and
    they are removed when a channel's deletion retires the rendition."""
    who = customer(runtime, clock)
    call = "CA" + "e" * 32
    quiet = wav_bytes(np.zeros(RATE, dtype=np.int16))  # 1 s of silence, then 10 s of tones
    await upload_channel(client, runtime, who, call, "inbound", quiet)
    await upload_channel(client, runtime, who, call, "outbound", wav_bytes(speech_like()))
    session = runtime.vault.sessions.find_session(who.tenant, call)
    assert session is not None
    merged = runtime.repo.get_merged(who.tenant.partner_id, session.session_id)
    assert merged is not None and merged.is_servable
    url = peaks_url(runtime, who, merged, clock)
    doc = (await client.get(with_query(url, spp="256"))).json()
    assert doc["length"] == -(-11 * doc["sample_rate"] // 256)  # played back to back
    found = loud_pixels(np.array(doc["data"][1::2], dtype=np.int8), 256, doc["sample_rate"])
    assert [(round(a, 1), round(b, 1)) for a, b in found] == [(a + 1, b + 1) for a, b in LOUD]
    [inbound, _] = runtime.repo.list_recordings(who.tenant.partner_id, session.session_id)[-2:]
    deleted = await client.delete(f"/api/v1/recordings/{inbound.recording_id}", headers=who.bearer)
    assert deleted.status_code == 200, deleted.text
    assert [runtime.vault.store.stat(k) for k in peaks_keys(merged.storage_key)] == [None] * 3
    assert (await client.get(url)).status_code == 410


async def test_peaks_honour_head_range_and_a_failing_access_log(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock, access_log: MemoryAccessLog
) -> None:
    """HEAD and Range work as for audio; other methods are 405; while the access log cannot be
    written the peaks are refused with 503 (nothing sent unrecorded), and served once it can."""
    who = customer(runtime, clock)
    recording = await recorded(client, runtime, who)
    url = peaks_url(runtime, who, recording, clock)
    whole = (await client.get(url)).content
    head = await client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(whole)
    part = await client.get(url, headers={"range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == whole[:10]
    assert (await client.get(url, headers={"range": f"bytes={len(whole)}-"})).status_code == 416
    assert (await client.post(url)).status_code == 405
    access_log.failing = True
    refused = await client.get(url)
    assert refused.status_code == 503 and refused.content != whole
    access_log.failing = False
    assert (await client.get(url)).content == whole
