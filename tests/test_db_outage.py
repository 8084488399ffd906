"""A database that goes away mid-service: every route answers 503 with a reason, then recovers."""

from __future__ import annotations

import sqlite3
from urllib.parse import urlsplit

import httpx
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.core.clock import FixedClock
from tapevault.db.outage import MESSAGE, is_outage
from tapevault.runtime import Runtime
from tests.dialects import customer
from tests.support import database_gone


async def test_a_database_outage_is_503_with_a_reason_and_recovers(
    runtime: Runtime, client: httpx.AsyncClient, clock: FixedClock, database_url: str
) -> None:
    """With the database gone, authenticated routes of every dialect answer 503 naming the
    database (not an opaque 500), and the same requests succeed once it is back."""
    who = customer(runtime, clock)
    made = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session = made.json()["ambient_session_id"]
    await client.post(
        f"/api/v1/ambient/session/{session}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.2),
    )
    runtime.worker.run_until_idle()
    links = await client.get(f"/api/v1/ambient/session/{session}/recording", headers=who.suki)
    media = urlsplit(links.json()["recordings"][0]["presigned_url"])
    media_path = f"{media.path}?{media.query}"
    requests = [
        ("GET", "/api/v1/sessions", who.bearer),
        ("GET", f"/api/v1/sessions/{session}/recordings", who.bearer),
        ("POST", "/api/v1/ambient/session/create", who.suki),
        ("GET", media_path, {}),
    ]
    with database_gone(runtime, database_url):
        for method, path, headers in requests:
            answer = await client.request(method, path, headers=headers)
            assert (answer.status_code, answer.json()["message"]) == (503, MESSAGE), path
            if path == media_path:  # the gateway's error names the dependency that failed
                assert answer.json()["error"] == "database_unavailable"
    for method, path, headers in requests:
        answer = await client.request(method, path, headers=headers)
        assert answer.status_code in (200, 201), (path, answer.text[:200])


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (sqlite3.OperationalError("database is locked"), None),
        (sqlite3.OperationalError("no such table: x"), False),
    ],
)
def test_only_sqlite_errors_that_mean_unusable_are_outages(
    error: sqlite3.OperationalError, outage: bool | None
) -> None:
    """SQLite's BUSY/CANTOPEN/IOERR are an outage; its generic SQLITE_ERROR (a missing table,
    a syntax error) stays a bug, a 500, so that it is noticed."""
    error.sqlite_errorcode = 1 if outage is False else 5  # type: ignore[attr-defined]
    assert is_outage(error) is (outage is not False)
