"""An object store that is unreachable while audio is finalized: the upload is kept and
retried for as long as the outage lasts, never failed for good after a few quick tries."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.auth.suki import issue_token
from tapevault.core.clock import FixedClock
from tapevault.core.lifecycle import MAX_ATTEMPTS
from tapevault.core.ports import MediaAttributes, ObjectInfo
from tapevault.errors import StoreUnavailable
from tapevault.ingest.finalize import STORE_RETRY_SECONDS
from tapevault.runtime import Runtime


async def test_finalization_outlasts_a_store_outage(
    client: httpx.AsyncClient,
    runtime: Runtime,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More failed attempts than MAX_ATTEMPTS while the store is down; then it is back and the
    recording becomes available, byte for byte."""
    tenant = runtime.vault.tenants.create("clinic", 86400).tenant
    headers = {"sdp_suki_token": issue_token(tenant, now=clock.now(), ttl_seconds=86400)}
    created = await client.post("/api/v1/ambient/session/create", headers=headers)
    session_id = created.json()["ambient_session_id"]
    store = runtime.vault.store
    working = store.put_media  # type: ignore[attr-defined]

    def down(key: str, chunks: Iterable[bytes], media: MediaAttributes) -> ObjectInfo:
        raise StoreUnavailable("The audio store cannot be reached; try again shortly.")

    monkeypatch.setattr(store, "put_media", down)
    wav = tone_wav_bytes(1.0)
    answer = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**headers, "content-type": "audio/wav"},
        content=wav,
    )
    assert answer.status_code == 202
    for _ in range(MAX_ATTEMPTS + 2):
        runtime.worker.run_until_idle()
        clock.advance(STORE_RETRY_SECONDS + 1)
    (recording,) = runtime.repo.list_recordings(tenant.partner_id, session_id)
    assert recording.status.value == "processing"
    (job,) = runtime.repo.pending_jobs(recording.recording_id)
    assert job.attempts > MAX_ATTEMPTS and "store unavailable" in (job.last_error or "")

    monkeypatch.setattr(store, "put_media", working)
    clock.advance(STORE_RETRY_SECONDS + 1)
    runtime.worker.run_until_idle()
    (recording,) = runtime.repo.list_recordings(tenant.partner_id, session_id)
    assert recording.status.value == "available"
    assert store.stat(recording.storage_key) is not None
