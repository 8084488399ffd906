"""Races between requests on one session, made deterministic by acting between two steps."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.core.clock import FixedClock
from tapevault.runtime import Runtime
from tests.dialects import customer


async def test_an_upload_racing_the_end_never_reopens_the_ended_session(
    runtime: Runtime, client: httpx.AsyncClient, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An end acknowledged while an upload is between its checks and its insert stays ended:
    the upload's "first audio" mark must not turn the session back to in_progress (observed
    with 6 concurrent uploads and an end: end answered 200, the session then in_progress with
    ended_at null, so it never completes and its merged file is never made)."""
    who = customer(runtime, clock)
    made = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id = made.json()["ambient_session_id"]
    vault = runtime.vault
    insert = runtime.repo.add_recording

    def end_first(*args: Any, **kwargs: Any) -> None:
        vault.sessions.end_session(who.tenant, session_id)  # the concurrent end lands here
        insert(*args, **kwargs)

    monkeypatch.setattr(runtime.repo, "add_recording", end_first)
    await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.2),
    )
    monkeypatch.undo()
    shown = (await client.get(f"/api/v1/sessions/{session_id}", headers=who.bearer)).json()
    assert shown["ended_at"] is not None
    assert shown["status"] != "in_progress"
