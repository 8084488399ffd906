"""The edges of retention, deletion and the access log: merged renditions that hold deleted
audio, holds set while a purge runs, deletions racing the worker or a crash, and what the log
says for HEAD and for signed metadata reads. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tapevault.audio_gen import tone_wav_bytes
from tapevault.auth.suki import issue_token
from tapevault.cli_compliance import cli_actor
from tapevault.core.clock import FixedClock
from tapevault.core.model import MERGED_CHANNEL, Recording
from tapevault.core.retention import PurgePace
from tapevault.db.schema import webhook_events
from tapevault.runtime import Runtime
from tests.dialects import Customer, asgi_client, customer, local, upload_channel
from tests.support import integrated_records

CALL = "CA" + "e" * 32


@pytest.fixture
async def client(audited: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of ``audited``, the runtime with the durable access log."""
    async with asgi_client(audited) as c:
        yield c


@pytest.fixture
def who(audited: Runtime, clock: FixedClock) -> Customer:
    return customer(audited, clock, "clinic")


async def merged_call(
    client: httpx.AsyncClient, audited: Runtime, who: Customer
) -> tuple[dict[str, str], str]:
    """A two-channel call with its merged file ready: (Amigo's URLs, Kore's file URL)."""
    for channel in ("inbound", "outbound"):
        await upload_channel(client, audited, who, CALL, channel, tone_wav_bytes(1.0))
    kore = await client.get(
        f"/api/public/bot/{who.bot}/v2/recordings", params={"sessionId": CALL}, headers=who.kore
    )
    assert kore.json()["status"] == "success"
    urls = await client.get(f"/v1/{who.ws}/recordings/{CALL}/urls", headers=who.bearer)
    return urls.json(), kore.json()["recording"][0]["fileUrl"]


def files(audited: Runtime) -> set[str]:
    return {p.name for p in (audited.settings.data_dir / "audio").rglob("*.wav")}


async def kore_status(client: httpx.AsyncClient, who: Customer) -> str:
    answer = await client.get(
        f"/api/public/bot/{who.bot}/v2/recordings", params={"sessionId": CALL}, headers=who.kore
    )
    status: str = answer.json()["status"]
    return status


async def test_deleting_a_channel_takes_the_merged_file_with_it(
    client: httpx.AsyncClient, audited: Runtime, who: Customer
) -> None:
    """The merged file holds the deleted caller's voice: it goes too (410, file removed), and
    Kore answers with what is left: the agent's channel itself, unmixed."""
    urls, merged = await merged_call(client, audited, who)
    inbound_id = local(urls["inbound_url"]).split("/media/")[1].split(".wav")[0]
    merged_id = local(merged).split("/media/")[1].split(".wav")[0]
    deleted = await client.delete(f"/api/v1/recordings/{inbound_id}", headers=who.bearer)
    assert deleted.status_code == 200
    gone = await client.get(local(merged))
    assert gone.status_code == 410 and gone.json()["reason"] == "deleted"
    assert f"{merged_id}.wav" not in files(audited)
    answer = await client.get(
        f"/api/public/bot/{who.bot}/v2/recordings", params={"sessionId": CALL}, headers=who.kore
    )
    assert answer.json()["status"] == "success"
    outbound_id = local(urls["outbound_url"]).split("/media/")[1].split(".wav")[0]
    assert f"/media/{outbound_id}.wav?" in answer.json()["recording"][0]["fileUrl"]


async def test_a_purged_rendition_is_made_again_not_stuck(
    client: httpx.AsyncClient, audited: Runtime, who: Customer, clock: FixedClock
) -> None:
    """The merged file deleted (or purged) while its inputs stay: Kore makes it again instead of
    answering media_in_progress forever."""
    _, merged = await merged_call(client, audited, who)
    merged_id = local(merged).split("/media/")[1].split(".wav")[0]
    assert (await client.delete(f"/api/v1/recordings/{merged_id}", headers=who.bearer)).is_success
    assert await kore_status(client, who) == "media_in_progress"
    audited.worker.run_until_idle()
    assert await kore_status(client, who) == "success"


async def test_retention_changes_carry_over_to_the_rendition(
    client: httpx.AsyncClient, audited: Runtime, who: Customer, clock: FixedClock
) -> None:
    """Shorter retention on both channels: the merged file expires and is purged with them."""
    urls, merged = await merged_call(client, audited, who)
    for name in ("inbound_url", "outbound_url"):
        rid = local(urls[name]).split("/media/")[1].split(".wav")[0]
        changed = await client.put(
            f"/api/v1/recordings/{rid}/retention",
            headers=who.bearer,
            json={"retention_seconds": 60},
        )
        assert changed.status_code == 200
    clock.advance(120)
    assert (await client.get(local(merged))).status_code == 410
    assert audited.context.retention.purge_due() == 3
    assert files(audited) == set()


class _MergedLast:
    """The repository, handing the due merged renditions to the purge after their inputs."""

    def __init__(self, repo: Any) -> None:
        self._repo = repo

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    def due_for_purge(self, now_ms: int, limit: int) -> Sequence[Recording]:
        due = self._repo.due_for_purge(now_ms, limit)
        return sorted(due, key=lambda r: r.channel == MERGED_CHANNEL)


@pytest.mark.parametrize("batch", [1, 200])
async def test_a_rendition_its_inputs_purge_retired_is_counted_once(
    client: httpx.AsyncClient,
    audited: Runtime,
    who: Customer,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
) -> None:
    """The merged file is due with its channels but comes after them, in a later batch (or
    the same one): the first channel's purge retires it, and the purge counts it once (not
    twice, not never) and removes every file; each channel is reported to webhooks once (a
    rendition is not reported)."""
    urls, _ = await merged_call(client, audited, who)
    channels = [
        local(urls[n]).split("/media/")[1].split(".wav")[0] for n in ("inbound_url", "outbound_url")
    ]
    for rid in channels:
        changed = await client.put(
            f"/api/v1/recordings/{rid}/retention",
            headers=who.bearer,
            json={"retention_seconds": 60},
        )
        assert changed.status_code == 200
    clock.advance(120)
    retention = audited.context.retention
    monkeypatch.setattr(retention, "repo", _MergedLast(retention.repo))
    monkeypatch.setattr(retention, "pace", PurgePace(batch=batch))
    assert retention.purge_due() == 3
    assert retention.purge_due() == 0
    assert files(audited) == set()
    with audited.repo.engine.connect() as conn:
        reported = Counter(
            conn.execute(
                select(webhook_events.c.recording_id).where(
                    webhook_events.c.type == "recording.expired"
                )
            ).scalars()
        )
    assert reported == Counter(channels)


@pytest.mark.parametrize("level", ["session", "tenant"])
async def test_session_and_tenant_retention_carry_over_to_the_rendition(
    client: httpx.AsyncClient, audited: Runtime, who: Customer, clock: FixedClock, level: str
) -> None:
    """Shorter retention for the whole call, or for the whole tenant: the merged file's expiry
    follows its inputs', it answers 410 with them and the purge removes every file."""
    urls, merged = await merged_call(client, audited, who)
    if level == "session":
        changed = await client.put(
            f"/api/v1/sessions/{CALL}/retention",
            headers=who.bearer,
            json={"retention_seconds": 60},
        )
        assert changed.status_code == 200
    else:
        audited.context.retention.set_tenant_retention(who.tenant, 60, cli_actor())
    clock.advance(59)
    assert (await client.get(local(merged), headers={"range": "bytes=0-3"})).status_code == 206
    clock.advance(61)
    for url in (merged, urls["inbound_url"], urls["outbound_url"]):
        expired = await client.get(local(url))
        assert expired.status_code == 410 and expired.json()["reason"] == "expired"
    assert audited.context.retention.purge_due() == 3
    assert files(audited) == set()


async def test_a_hold_set_while_the_purge_runs_wins(
    client: httpx.AsyncClient, audited: Runtime, who: Customer, clock: FixedClock
) -> None:
    """The purge has picked its recordings; a hold acknowledged before it tombstones them stops
    it: nothing of the held session is removed."""
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id = created.json()["ambient_session_id"]
    for _ in range(2):
        await client.post(
            f"/api/v1/ambient/session/{session_id}/audio",
            headers={**who.suki, "content-type": "audio/wav"},
            content=tone_wav_bytes(0.5),
        )
    audited.worker.run_until_idle()
    clock.advance(8 * 86400)
    retention = audited.context.retention
    commit_many = retention.audit.commit_many  # the purge logs a batch with one append
    held: list[bool] = []

    def commit_then_hold(events: object) -> None:
        commit_many(events)  # type: ignore[arg-type]
        if not held:  # the hold lands between the purge's records and its tombstones
            held.append(True)
            retention.hold(who.tenant, session_id, reason="court order", by=None, actor=cli_actor())

    retention.audit.commit_many = commit_then_hold  # type: ignore[method-assign]
    try:
        assert retention.purge_due() == 0
    finally:
        retention.audit.commit_many = commit_many  # type: ignore[method-assign]
    assert held == [True]  # the purge did start on the session: the hold stopped it
    assert len(files(audited)) == 2
    fresh = {"sdp_suki_token": issue_token(who.tenant, now=clock.now(), ttl_seconds=60)}
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=fresh)
    assert urls.status_code == 200  # held: still served


async def test_deleted_while_the_worker_decodes_leaves_no_file(
    client: httpx.AsyncClient, audited: Runtime, who: Customer
) -> None:
    """A recording deleted before its finalization finishes never leaves audio in storage."""
    response = await client.post(
        f"/v1/{who.ws}/calls/{CALL}/audio",
        params={"channel": "inbound"},
        headers={**who.bearer, "content-type": "audio/wav"},
        content=tone_wav_bytes(1.0),
    )
    assert response.status_code == 202
    worker = audited.worker.finalizer
    original = worker.decode
    deleted: list[object] = []

    def decode_then_delete(src: object, dst: object) -> object:
        done = original(src, dst)  # type: ignore[arg-type]
        deleted.extend(audited.context.retention.delete_session(who.tenant, CALL, cli_actor()))
        return done

    worker.decode = decode_then_delete  # type: ignore[assignment]
    try:
        audited.worker.run_until_idle()
    finally:
        worker.decode = original  # type: ignore[assignment]
    assert len(deleted) == 1  # the deletion did land in the middle of the finalization
    assert files(audited) == set()


async def test_a_crash_during_deletion_never_serves_and_is_finished(
    client: httpx.AsyncClient, audited: Runtime, who: Customer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tombstone comes first: if removing the file fails (a crash), the recording already
    answers 410, and the next purge run removes the file."""
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id = created.json()["ambient_session_id"]
    await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.5),
    )
    audited.worker.run_until_idle()

    def crash(key: str) -> bool:
        raise OSError("power cut")

    monkeypatch.setattr(audited.vault.store, "delete", crash)
    failed = await client.delete(f"/api/v1/sessions/{session_id}", headers=who.bearer)
    assert failed.status_code == 500
    monkeypatch.undo()
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki)
    assert urls.status_code == 410 and urls.json()["reason"] == "deleted"
    assert len(files(audited)) == 1
    audited.context.retention.purge_due()
    assert files(audited) == set()


async def test_head_is_recorded_without_ranges(
    client: httpx.AsyncClient, audited: Runtime, who: Customer, clock: FixedClock
) -> None:
    """HEAD sends no audio: its playback record has no ranges and no bytes."""
    urls, _ = await merged_call(client, audited, who)
    head = await client.head(local(urls["inbound_url"]), headers={"range": "bytes=0-99"})
    assert head.status_code == 206
    clock.advance(31)
    assert audited.audit is not None
    audited.audit.flush()
    audited.audit.flush()
    rid = local(urls["inbound_url"]).split("/media/")[1].split(".wav")[0]
    history = await client.get(f"/api/v1/recordings/{rid}/access", headers=who.bearer)
    (playback,) = [r for r in history.json()["records"] if r["action"] == "media.playback"]
    assert playback["ranges"] == [] and playback["bytes_sent"] == 0


async def test_signed_metadata_reads_belong_to_the_tenant(
    client: httpx.AsyncClient, audited: Runtime, who: Customer
) -> None:
    """A read of the signed metadata document is in the tenant's own log (with the signing
    key's id); with call recording off the document is refused like the API."""
    urls, _ = await merged_call(client, audited, who)
    assert (await client.get(local(urls["metadata_url"]))).status_code == 200
    log = await client.get(
        "/api/v1/audit", params={"action": "call.metadata_read"}, headers=who.bearer
    )
    (record,) = log.json()["records"]
    assert record["actor"]["kind"] == "signed_url" and record["actor"]["id"]
    audited.vault.tenants.set_recording_enabled(who.tenant, False)
    refused = await client.get(local(urls["metadata_url"]))
    assert refused.status_code == 503 and refused.json()["error"] == "not_configured"


@pytest.mark.parametrize("value", ["²", "١٢٣", "1²"])
async def test_digits_of_other_scripts_are_client_errors(
    client: httpx.AsyncClient, who: Customer, value: str
) -> None:
    """Superscripts and other scripts' digits in a number are 400/422, never a 500."""
    for name in ("limit", "cursor", "since", "until"):
        answer = await client.get("/api/v1/audit", params={name: value}, headers=who.bearer)
        assert answer.status_code == 400, (name, answer.text)
    upload = await client.post(
        f"/v1/{who.ws}/calls/{CALL}/audio",
        params={"channel": "inbound", "media_start_epoch_ms": value},
        headers={**who.bearer, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.2),
    )
    assert upload.status_code == 422


async def test_absurd_retention_is_refused_before_anything_changes(
    client: httpx.AsyncClient, audited: Runtime, who: Customer
) -> None:
    """2^62 seconds of retention is a 400, logged as refused (never as done), and changes
    nothing."""
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id = created.json()["ambient_session_id"]
    for seconds in (2**62, 0, -5):
        answer = await client.put(
            f"/api/v1/sessions/{session_id}/retention",
            headers=who.bearer,
            json={"retention_seconds": seconds},
        )
        assert answer.status_code == 400
    view = await client.get(f"/api/v1/sessions/{session_id}", headers=who.bearer)
    assert view.json()["retention_seconds"] is None
    assert audited.audit is not None
    audited.audit.flush()
    statuses = [
        r.entry.status for r in integrated_records(audited) if r.entry.action == "retention.set"
    ]
    assert statuses == [400, 400, 400]


async def test_a_hold_on_a_deleted_session_is_refused_not_acknowledged(
    client: httpx.AsyncClient, audited: Runtime, who: Customer
) -> None:
    """A hold placed after the session was deleted answers 409 saying so: a 200 "held": true
    told a compliance officer that audio already erased was preserved."""
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id = created.json()["ambient_session_id"]
    await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.5),
    )
    audited.worker.run_until_idle()
    deleted = await client.delete(f"/api/v1/sessions/{session_id}", headers=who.bearer)
    assert deleted.status_code == 200
    held = await client.put(
        f"/api/v1/sessions/{session_id}/hold", headers=who.bearer, json={"reason": "court order"}
    )
    assert held.status_code == 409, held.text
    assert "deleted" in held.json()["message"]
    shown = await client.get(f"/api/v1/sessions/{session_id}", headers=who.bearer)
    assert shown.json()["hold"] is None


async def test_retention_of_erased_audio_cannot_change(
    client: httpx.AsyncClient, audited: Runtime, who: Customer
) -> None:
    """A retention change on a deleted recording or session answers 409 saying so (it used to
    answer 200, as if the erased audio would now be kept), and writes nothing."""
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id = created.json()["ambient_session_id"]
    uploaded = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.5),
    )
    recording_id = uploaded.json()["recording_id"]
    audited.worker.run_until_idle()
    deleted = await client.delete(f"/api/v1/recordings/{recording_id}", headers=who.bearer)
    assert deleted.status_code == 200, deleted.text
    changed = await client.put(
        f"/api/v1/recordings/{recording_id}/retention",
        headers=who.bearer,
        json={"retention": "30d"},
    )
    assert changed.status_code == 409, changed.text
    assert "deleted" in changed.json()["message"]
    deleted = await client.delete(f"/api/v1/sessions/{session_id}", headers=who.bearer)
    assert deleted.status_code == 200, deleted.text
    changed = await client.put(
        f"/api/v1/sessions/{session_id}/retention", headers=who.bearer, json={"retention": "30d"}
    )
    assert changed.status_code == 409, changed.text
    shown = await client.get(f"/api/v1/sessions/{session_id}", headers=who.bearer)
    assert shown.json()["retention_seconds"] is None  # nothing was written
    (tombstone,) = shown.json()["recordings"]
    assert tombstone["retention_seconds"] is None
