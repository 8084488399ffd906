"""Retention, legal hold, deletion and the access log, in process on SQLite and PostgreSQL.

The runtime here has the real, durable access log (the other API tests use a list), and a
fixed clock, so "on time" is tested at the exact millisecond."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.config import Settings
from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.clock import FixedClock
from tapevault.http.native import instant
from tapevault.runtime import Runtime, open_runtime
from tests.dialects import Customer, asgi_client, customer, local, upload_channel
from tests.support import integrated_records

CALL = "CA" + "d" * 32
RETENTION = 5  # seconds


@pytest.fixture
async def client(audited: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of ``audited``, the runtime with the durable access log."""
    async with asgi_client(audited) as c:
        yield c


@pytest.fixture
def short(audited: Runtime, clock: FixedClock) -> Customer:
    """A tenant whose recordings are kept five seconds."""
    who = customer(audited, clock, "short")
    audited.repo.set_tenant_retention(who.tenant.partner_id, RETENTION)
    return who


async def ambient(client: httpx.AsyncClient, audited: Runtime, who: Customer) -> str:
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id: str = created.json()["ambient_session_id"]
    await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(1.0),
    )
    audited.worker.run_until_idle()
    await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=who.suki)
    return session_id


async def call(client: httpx.AsyncClient, audited: Runtime, who: Customer) -> None:
    for channel in ("inbound", "outbound"):
        await upload_channel(client, audited, who, CALL, channel, tone_wav_bytes(1.0))


async def answers(
    client: httpx.AsyncClient, who: Customer, session_id: str
) -> dict[str, httpx.Response]:
    """What each dialect says about the session and the call right now."""
    return {
        "suki": await client.get(
            f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki
        ),
        "amigo": await client.get(f"/v1/{who.ws}/recordings/{CALL}/urls", headers=who.bearer),
        "kore": await client.get(
            f"/api/public/bot/{who.bot}/v2/recordings",
            params={"sessionId": CALL},
            headers=who.kore,
        ),
    }


async def until_healthy(client: httpx.AsyncClient) -> None:
    """Wait (bounded) for /healthz to say the access log is writable again."""
    for _ in range(300):
        if (await client.get("/healthz")).status_code == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the access log did not recover")


def stored_files(audited: Runtime) -> list[Path]:
    return sorted((audited.settings.data_dir / "audio").rglob("*.wav"))


async def test_every_dialect_turns_expired_on_time_and_purge_leaves_a_tombstone(
    client: httpx.AsyncClient, audited: Runtime, short: Customer, clock: FixedClock
) -> None:
    """At expires_at exactly: Suki 410, Amigo 404, Kore media_unavailable, and a media URL that
    has not expired yet 410; the purge then removes the files and keeps tombstone and history."""
    session_id = await ambient(client, audited, short)
    await call(client, audited, short)
    before = await answers(client, short, session_id)
    assert [before[k].status_code for k in before] == [200, 200, 200]
    assert before["kore"].json()["status"] == "success"
    media = local(before["suki"].json()["recordings"][0]["presigned_url"])
    assert (await client.get(media, headers={"range": "bytes=0-99"})).status_code == 206
    recording_id = before["suki"].json()["recordings"][0]["recording_id"]

    clock.advance(RETENTION - 0.001)
    assert (await client.get(media)).status_code == 200  # one millisecond before: served
    clock.advance(0.001)
    after = await answers(client, short, session_id)
    assert after["suki"].status_code == 410
    body = after["suki"].json()
    assert body["code"] == 410 and body["message"] == "Recording has expired per retention policy."
    assert body["reason"] == "expired" and body["policy"] == "tenant"
    assert body["at"] == int(clock.now())
    assert after["amigo"].status_code == 404
    assert after["kore"].json() == {"status": "media_unavailable", "recording": []}
    gone = await client.get(media)
    assert gone.status_code == 410 and gone.json()["reason"] == "expired"
    assert b"RIFF" not in gone.content

    assert len(stored_files(audited)) == 4  # two channels, their merge, the ambient recording
    assert audited.context.retention.purge_due() == 4
    assert stored_files(audited) == []
    admin = await client.get(f"/api/v1/sessions/{session_id}", headers=short.bearer)
    (tomb,) = admin.json()["recordings"]
    assert tomb["status"] == "expired" and tomb["purge_reason"] == "expired"
    assert tomb["retention_policy"] == "tenant" and tomb["purged_at"]
    audited.audit.flush()  # type: ignore[union-attr]
    history = await client.get(f"/api/v1/recordings/{recording_id}/access", headers=short.bearer)
    actions = [r["action"] for r in history.json()["records"]]
    assert "recording.urls_issue" in actions and "retention.purge" in actions
    assert (await client.get(media)).status_code == 410  # still 410 after the purge


async def test_overrides_per_session_and_recording(
    client: httpx.AsyncClient, audited: Runtime, clock: FixedClock
) -> None:
    """Tenant 7 d, session 10 s, one recording 20 s: each expires by its own rule; clearing
    the overrides brings the tenant's back."""
    who = customer(audited, clock, "clinic")
    session_id = await ambient(client, audited, who)
    set_session = await client.put(
        f"/api/v1/sessions/{session_id}/retention", headers=who.bearer, json={"retention": "10s"}
    )
    assert set_session.status_code == 200
    (rec,) = set_session.json()["recordings"]
    assert rec["retention_policy"] == "session"
    assert rec["expires_at"] == instant(int(clock.now() * 1000) + 10_000)
    longer = await client.put(
        f"/api/v1/recordings/{rec['recording_id']}/retention",
        headers=who.bearer,
        json={"retention_seconds": 20},
    )
    assert longer.json()["retention_policy"] == "recording"
    assert longer.json()["expires_at"] == instant(int(clock.now() * 1000) + 20_000)  # same start
    clock.advance(15)
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki)
    assert urls.status_code == 200  # the recording's own 20 s win over the session's 10 s
    await client.put(
        f"/api/v1/recordings/{rec['recording_id']}/retention",
        headers=who.bearer,
        json={"retention": None},
    )
    assert (
        await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki)
    ).status_code == 410
    cleared = await client.put(
        f"/api/v1/sessions/{session_id}/retention", headers=who.bearer, json={"retention": None}
    )
    (back,) = cleared.json()["recordings"]
    assert back["retention_policy"] == "tenant"
    created = datetime.fromisoformat(back["created_at"])
    assert datetime.fromisoformat(back["expires_at"]) == created + timedelta(days=7)  # tenant's
    served = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki)
    assert served.status_code == 200  # 15 s old, well within the tenant's 7 days
    bad = await client.put(
        f"/api/v1/sessions/{session_id}/retention", headers=who.bearer, json={"retention": "x"}
    )
    assert bad.status_code == 400


async def test_hold_survives_retention_and_deletion_then_is_purged(
    client: httpx.AsyncClient, audited: Runtime, short: Customer, clock: FixedClock
) -> None:
    """Held: served past retention, never purged, deletion refused (409, and logged); lifted:
    the next purge removes it."""
    session_id = await ambient(client, audited, short)
    held = await client.put(
        f"/api/v1/sessions/{session_id}/hold",
        headers=short.bearer,
        json={"reason": "litigation 2026-17", "by": "J. Doe, counsel"},
    )
    assert held.status_code == 200 and held.json()["held"] is True
    assert held.json()["by"] == "J. Doe, counsel"
    clock.advance(RETENTION * 10)
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=short.suki)
    assert urls.status_code == 200
    media = local(urls.json()["recordings"][0]["presigned_url"])
    assert (await client.get(media)).status_code == 200
    assert audited.context.retention.purge_due() == 0
    assert len(stored_files(audited)) == 1
    refused = await client.delete(f"/api/v1/sessions/{session_id}", headers=short.bearer)
    assert refused.status_code == 409 and "legal hold" in refused.json()["message"]
    recording_id = urls.json()["recordings"][0]["recording_id"]
    refused_one = await client.delete(f"/api/v1/recordings/{recording_id}", headers=short.bearer)
    assert refused_one.status_code == 409

    lifted = await client.delete(f"/api/v1/sessions/{session_id}/hold", headers=short.bearer)
    assert lifted.json()["held"] is False
    assert audited.context.retention.purge_due() == 1
    assert stored_files(audited) == []
    audited.audit.flush()  # type: ignore[union-attr]
    log = await client.get("/api/v1/audit", params={"session_id": session_id}, headers=short.bearer)
    actions = [(r["action"], r["status"]) for r in log.json()["records"]]
    assert ("session.hold_set", 200) in actions and ("session.hold_clear", 200) in actions
    assert ("session.delete", 409) in actions and ("retention.purge", 200) in actions


async def test_deletion_answers_deleted_everywhere(
    client: httpx.AsyncClient, audited: Runtime, clock: FixedClock
) -> None:
    """After DELETE: Suki and the gateway 410 "deleted" (when), Amigo 404, Kore unavailable;
    the files are gone, the tombstone says who."""
    who = customer(audited, clock, "clinic")
    session_id = await ambient(client, audited, who)
    await call(client, audited, who)
    before = await answers(client, who, session_id)
    media = local(before["suki"].json()["recordings"][0]["presigned_url"])
    call_media = local(before["amigo"].json()["inbound_url"])
    deleted = await client.delete(f"/api/v1/sessions/{session_id}", headers=who.bearer)
    assert deleted.status_code == 200
    call_session = await client.delete(f"/api/v1/sessions/{CALL}", headers=who.bearer)
    assert len(call_session.json()["deleted"]) == 3  # both channels and their merged file
    after = await answers(client, who, session_id)
    assert after["suki"].status_code == 410
    assert after["suki"].json()["reason"] == "deleted"
    assert after["suki"].json()["message"] == "Recording has been deleted."
    assert after["amigo"].status_code == 404
    assert after["kore"].json()["status"] == "media_unavailable"
    for url in (media, call_media):
        gone = await client.get(url)
        assert gone.status_code == 410 and gone.json()["reason"] == "deleted"
    assert stored_files(audited) == []
    view = (await client.get(f"/api/v1/sessions/{session_id}", headers=who.bearer)).json()
    assert view["deleted_at"] and view["recordings"][0]["deleted_by"].startswith("api_key:")
    upload = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.5),
    )
    assert upload.status_code == 409


async def test_audit_failure_is_503_and_serves_no_audio(
    client: httpx.AsyncClient, audited: Runtime, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the log cannot be written: URL issuance and media both 503, no byte of audio;
    once it can, everything works again."""
    who = customer(audited, clock, "clinic")
    session_id = await ambient(client, audited, who)
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki)
    media = local(urls.json()["recordings"][0]["presigned_url"])
    store = audited.audit_store

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "write", broken)
    refused = await client.get(media, headers={"range": "bytes=0-"})
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["error"] == "audit_unavailable" and b"RIFF" not in refused.content
    issued = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki)
    assert issued.status_code == 503 and "presigned_url" not in issued.text
    amigo = await client.get(f"/v1/{who.ws}/recordings/CAnone/urls", headers=who.bearer)
    assert amigo.status_code == 404  # refused before anything is served: nothing to log first
    monkeypatch.undo()
    # The writer tries again on its own (after a back-off of at most 2 s); /healthz tells.
    await until_healthy(client)
    served = await client.get(media, headers={"range": "bytes=0-3"})
    assert served.status_code == 206 and served.content == b"RIFF"


async def test_a_browser_playback_is_one_record(
    client: httpx.AsyncClient, audited: Runtime, clock: FixedClock
) -> None:
    """The Range requests of one <audio> playback (start, seeks, a resume) fold into one
    media.playback record with every range and the byte total."""
    who = customer(audited, clock, "clinic")
    session_id = await ambient(client, audited, who)
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki)
    media = local(urls.json()["recordings"][0]["presigned_url"])
    chrome = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36"}
    sent = 0
    for header in ("bytes=0-", "bytes=0-1", "bytes=16000-", "bytes=24000-", "bytes=8000-8999"):
        response = await client.get(media, headers={**chrome, "range": header})
        assert response.status_code == 206
        sent += len(response.content)
        clock.advance(2)
    other = await client.get(media, headers={"user-agent": "curl/8", "range": "bytes=0-9"})
    assert other.status_code == 206
    clock.advance(31)
    audited.audit.flush()  # type: ignore[union-attr]
    audited.audit.flush()  # type: ignore[union-attr]
    recording_id = urls.json()["recordings"][0]["recording_id"]
    history = await client.get(f"/api/v1/recordings/{recording_id}/access", headers=who.bearer)
    playbacks = [r for r in history.json()["records"] if r["action"] == "media.playback"]
    assert len(playbacks) == 2  # the browser's, and curl's (another client)
    browser = next(p for p in playbacks if "Chrome" in (p["user_agent"] or ""))
    assert browser["detail"]["requests"] == 5 and browser["bytes_sent"] == sent
    last_byte = len(tone_wav_bytes(1.0)) - 1  # the ranges together cover the whole file
    assert browser["ranges"] == [[0, last_byte]] and browser["status"] == 206
    assert browser["actor"]["kind"] == "signed_url"


async def test_audit_api_filters_pages_and_tenants(
    client: httpx.AsyncClient, audited: Runtime, clock: FixedClock
) -> None:
    """Admin keys read their own tenant's log, filtered and paged; members may not; another
    tenant sees none of it."""
    a, b = customer(audited, clock, "A"), customer(audited, clock, "B")
    session_id = await ambient(client, audited, a)
    for _ in range(3):
        await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=a.suki)
    audited.audit.flush()  # type: ignore[union-attr]
    first = await client.get(
        "/api/v1/audit",
        params={"session_id": session_id, "action": "recording.urls_issue", "limit": 2},
        headers=a.bearer,
    )
    page = first.json()
    assert len(page["records"]) == 2 and page["next_cursor"]
    second = await client.get(
        "/api/v1/audit",
        params={
            "session_id": session_id,
            "action": "recording.urls_issue",
            "limit": 2,
            "cursor": page["next_cursor"],
        },
        headers=a.bearer,
    )
    assert len(second.json()["records"]) == 1 and second.json()["next_cursor"] is None
    record = page["records"][0]
    assert record["actor"]["kind"] == "suki_token" and record["tenant_id"] == a.tenant.partner_id
    assert "sdp_suki_token" not in first.text and a.api_key not in first.text
    since = await client.get(
        "/api/v1/audit", params={"since": "2100-01-01T00:00:00Z"}, headers=a.bearer
    )
    assert since.json()["records"] == []
    await client.get("/api/v1/audit", headers=b.bearer)  # reading the log is logged too
    theirs = (await client.get("/api/v1/audit", headers=b.bearer)).json()["records"]
    assert [r["action"] for r in theirs] == ["audit.read"]
    assert all(r["tenant_id"] == b.tenant.partner_id for r in theirs)
    assert session_id not in str(theirs)
    member = await client.post(f"/v1/{a.ws}/api-keys", headers=a.bearer, json={"role": "member"})
    denied = await client.get(
        "/api/v1/audit", headers={"authorization": f"Bearer {member.json()['api_key']}"}
    )
    assert denied.status_code == 403
    bad = await client.get("/api/v1/audit", params={"limit": "0"}, headers=a.bearer)
    assert bad.status_code == 400


def test_records_bounded_and_never_hold_secrets(audited: Runtime) -> None:
    """Hostile sizes and NUL in logged fields are bounded and cleaned, never a failed write."""
    event = AccessEvent(
        action=Action.AUTH_FAILURE,
        actor=Actor(provider_id="p" * 10_000, user_agent="ua\x00" * 1000, client_ip="1.2.3.4"),
        status=401,
        at_ms=1,
        session_id="s" * 500 + "\x00",
        error="e" * 5000,
    )
    audited.context.access_log.commit(event)
    (record,) = [r for r in integrated_records(audited) if r.entry.action == "auth.failure"]
    assert len(record.entry.provider_id or "") == 200 and "\x00" not in (
        record.entry.user_agent or ""
    )
    assert len(record.entry.session_id or "") == 64


async def test_issuance_after_the_answer_when_configured(
    settings: Settings, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TAPEVAULT_AUDIT_DURABLE=media: URL issuance is not waited for but still recorded, and
    refused (503) once the log has failed; audio still waits for its record."""
    from dataclasses import replace as change

    rt = open_runtime(change(settings, audit_durable_all=False), clock=clock)
    try:
        async with asgi_client(rt) as client:
            who = customer(rt, clock, "clinic")
            session_id = await ambient(client, rt, who)
            urls = await client.get(
                f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki
            )
            assert urls.status_code == 200
            assert rt.audit is not None
            rt.audit.flush()
            actions = [r.entry.action for r in integrated_records(rt)]
            assert "recording.urls_issue" in actions

            def broken(*args: object, **kwargs: object) -> None:
                raise OSError("disk full")

            monkeypatch.setattr(rt.audit_store, "write", broken)
            media = local(urls.json()["recordings"][0]["presigned_url"])
            assert (await client.get(media)).status_code == 503  # the failure is noticed
            refused = await client.get(
                f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki
            )
            assert refused.status_code == 503
            monkeypatch.undo()
    finally:
        rt.close()
