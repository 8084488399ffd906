"""Webhooks in process, on SQLite and PostgreSQL: the outbox written with each change, the API,
and deliveries sent by the worker's dispatcher to a real receiver process (tests/receiver.py)
that verifies every signature with the ``standardwebhooks`` package."""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tapevault.audio_gen import tone_wav_bytes
from tapevault.cli import main
from tapevault.config import Settings
from tapevault.core import events
from tapevault.core.clock import FixedClock
from tapevault.core.model import RecordingStatus
from tapevault.core.sources import upload_key
from tapevault.core.webhooks import Outcome, next_attempt_delay_ms
from tapevault.db.schema import webhook_deliveries, webhook_events
from tapevault.errors import InvalidRequest, Unavailable
from tapevault.runtime import Runtime
from tapevault.webhooks.dispatch import Dispatcher
from tapevault.webhooks.sender import _retry_after
from tapevault.webhooks.ssrf import AddressPolicy, CheckAddress
from tests.dialects import Customer, customer
from tests.receiver import Receiver

ALL_TYPES = {
    "recording.available",
    "recording.failed",
    "session.completed",
    "recording.expired",
    "recording.deleted",
    "legal_hold.set",
    "legal_hold.cleared",
}


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Receivers run on 127.0.0.1 here; retries are immediate, and give up after three."""
    return Settings.load(
        {
            "data_dir": str(tmp_path / "data"),
            "database_url": database_url,
            "public_url": "https://vault.test",
            "max_upload_bytes": "8M",
            "webhook_allow_private": "on",
            "webhook_retry_schedule": "0,0,0",
            "webhook_timeout": "5",
        },
        env={},
    )


@pytest.fixture
def who(runtime: Runtime, clock: FixedClock) -> Customer:
    return customer(runtime, clock)


def dispatcher(runtime: Runtime) -> Dispatcher:
    found = runtime.worker.webhooks
    assert found is not None
    return found


async def register(
    client: httpx.AsyncClient, who: Customer, receiver: Receiver, **fields: Any
) -> tuple[str, dict[str, Any]]:
    """A new endpoint on a fresh receiver path, the receiver told its secret: (path, body)."""
    path = f"/hook/{uuid.uuid4().hex}"
    created = await client.post(
        "/api/v1/webhooks", headers=who.bearer, json={"url": receiver.url(path), **fields}
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    receiver.configure(path, [body["secret"]])
    return path, body


async def recorded_session(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, *, corrupt: bool = False
) -> tuple[str, str]:
    """An ended session with one upload, finalized by the worker (failed if ``corrupt``)."""
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id = created.json()["ambient_session_id"]
    up = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.3),
    )
    assert up.status_code == 202, up.text
    recording_id: str = up.json()["recording_id"]
    if corrupt:
        # The received upload, damaged in the store before the worker reads it.
        runtime.vault.store.put(upload_key(recording_id), [b"RIFF" + b"\x00" * 40])
    ended = await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=who.suki)
    assert ended.status_code == 200, ended.text
    runtime.worker.run_until_idle()
    return session_id, recording_id


def verified(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    got = receiver.received(path)
    assert all(r["verified_by"] for r in got), got
    return [r["payload"] for r in got]


async def test_every_event_type_arrives_once_per_change_in_order(
    client: httpx.AsyncClient,
    runtime: Runtime,
    who: Customer,
    receiver: Receiver,
    clock: FixedClock,
) -> None:
    """Upload, failure, completion, hold set (twice: one event), hold cleared, deletion and the
    purge each send one signed event; a session's events arrive in the order they happened,
    numbered per recording (or per session) from 1; payloads hold ids and a status only."""
    path, _ = await register(client, who, receiver)
    kept, kept_recording = await recorded_session(client, runtime, who)
    failed, failed_recording = await recorded_session(client, runtime, who, corrupt=True)
    hold = {**who.bearer, "content-type": "application/json"}
    for reason in ("litigation", "litigation, amended"):
        held = await client.put(
            f"/api/v1/sessions/{kept}/hold", headers=hold, content=f'{{"reason": "{reason}"}}'
        )
        assert held.status_code == 200, held.text
    assert (await client.delete(f"/api/v1/sessions/{kept}/hold", headers=who.bearer)).is_success
    deleted = await client.delete(f"/api/v1/recordings/{kept_recording}", headers=who.bearer)
    assert deleted.status_code == 200, deleted.text
    expiring, expiring_recording = await recorded_session(client, runtime, who)
    clock.advance(8 * 86400)
    assert runtime.context.retention.purge_due() == 2

    sent = dispatcher(runtime).run_until_idle()
    events = verified(receiver, path)
    assert sent == len(events) == 11, events
    assert {e["type"] for e in events} == ALL_TYPES
    by_session: dict[str, list[tuple[str, str | None, int]]] = {}
    for e in events:
        data = e["data"]
        assert set(data) <= {"session_id", "recording_id", "status", "sequence"}, data
        assert set(e) == {"type", "timestamp", "data"}
        by_session.setdefault(data["session_id"], []).append(
            (e["type"], data.get("recording_id"), data["sequence"])
        )
    assert by_session[kept] == [
        ("recording.available", kept_recording, 1),
        ("session.completed", None, 1),
        ("legal_hold.set", None, 2),
        ("legal_hold.cleared", None, 3),
        ("recording.deleted", kept_recording, 2),
    ]
    assert by_session[failed] == [
        ("recording.failed", failed_recording, 1),
        ("session.completed", None, 1),
        ("recording.expired", failed_recording, 2),  # a failure's received audio expires too
    ]
    assert by_session[expiring] == [
        ("recording.available", expiring_recording, 1),
        ("session.completed", None, 1),
        ("recording.expired", expiring_recording, 2),
    ]
    statuses = {(e["type"], e["data"]["session_id"]): e["data"]["status"] for e in events}
    assert statuses[("session.completed", failed)] == "failed"
    assert statuses[("session.completed", kept)] == "completed"
    # Each arrived once: nothing is left to send, and the log says delivered.
    assert dispatcher(runtime).run_until_idle() == 0
    assert len(receiver.received(path)) == 11


async def test_a_rolled_back_change_writes_no_event(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, receiver: Receiver
) -> None:
    """When the transaction of a change fails after its event was written, neither the change
    nor the event nor its delivery remains, and nothing is sent."""
    path, _ = await register(client, who, receiver)
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id = created.json()["ambient_session_id"]
    up = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.3),
    )
    recording = runtime.repo.get_recording(up.json()["recording_id"])
    assert recording is not None

    def failing_plan(*_: object) -> None:
        raise RuntimeError("the transaction fails after the event was written")

    finished = replace(recording, status=RecordingStatus.AVAILABLE)
    with pytest.raises(RuntimeError):
        runtime.repo.finish_recording(
            finished,
            expect=RecordingStatus.PROCESSING,
            plan=failing_plan,
            announce=lambda s, rs: [events.recording_finished(finished, 1)],
        )
    with runtime.engine.connect() as db:
        assert db.execute(select(func.count()).select_from(webhook_events)).scalar() == 0
        assert db.execute(select(func.count()).select_from(webhook_deliveries)).scalar() == 0
    current = runtime.repo.get_recording(recording.recording_id)
    assert current is not None and current.status is RecordingStatus.PROCESSING
    assert dispatcher(runtime).run_until_idle() == 0
    assert receiver.received(path) == []


async def test_an_endpoint_registered_later_gets_no_history(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, receiver: Receiver
) -> None:
    """Events fan out to the endpoints subscribed when they happen; event types filter."""
    await recorded_session(client, runtime, who)
    path, _ = await register(client, who, receiver)
    holds_only, _ = await register(client, who, receiver, events=["legal_hold.set"])
    session_id, _ = await recorded_session(client, runtime, who)
    await client.put(
        f"/api/v1/sessions/{session_id}/hold", headers=who.bearer, json={"reason": "audit"}
    )
    dispatcher(runtime).run_until_idle()
    assert [e["type"] for e in verified(receiver, path)] == [
        "recording.available",
        "session.completed",
        "legal_hold.set",
    ]
    assert [e["type"] for e in verified(receiver, holds_only)] == ["legal_hold.set"]


async def test_a_receiver_answering_410_disables_its_endpoint(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, receiver: Receiver
) -> None:
    """410 Gone: the endpoint is disabled with a reason, what was pending for it is cancelled,
    and later events are not queued for it."""
    path, body = await register(client, who, receiver)
    receiver.configure(path, [body["secret"]], default={"status": 410})
    await recorded_session(client, runtime, who)
    dispatcher(runtime).run_until_idle()
    assert len(receiver.received(path)) == 1
    shown = (await client.get(f"/api/v1/webhooks/{body['id']}", headers=who.bearer)).json()
    assert shown["enabled"] is False and "410" in shown["disabled_reason"]
    log = (
        await client.get(f"/api/v1/webhooks/{body['id']}/deliveries", headers=who.bearer)
    ).json()["deliveries"]
    assert sorted(d["status"] for d in log) == ["cancelled", "failed"]
    await recorded_session(client, runtime, who)
    assert dispatcher(runtime).run_until_idle() == 0
    assert len(receiver.received(path)) == 1


async def test_a_secret_rotated_while_deliveries_are_pending_keeps_them_verifiable(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, receiver: Receiver
) -> None:
    """A delivery retried after a rotation is signed with both secrets: a receiver holding
    either one verifies it; the rotation answer shows the new secret and the overlap."""
    path, body = await register(client, who, receiver)
    old = body["secret"]
    receiver.configure(path, [old], answers=[{"status": 503}, {"status": 503}])
    await recorded_session(client, runtime, who)
    run = dispatcher(runtime)
    assert run.run_once()  # first attempt of the first event: 503, retried "now" (schedule 0)
    rotated = await client.post(f"/api/v1/webhooks/{body['id']}/rotate-secret", headers=who.bearer)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_")
    assert rotated.json()["previous_secret_valid_until"] is not None
    receiver.configure(path, [old, new], answers=[{"status": 503}])
    run.run_until_idle()
    got = receiver.received(path)
    # Before the rotation: the old secret's signature only; after it, both (old, new).
    assert [r["verified_by"] for r in got] == [[0], [0, 1], [0, 1], [0, 1]]
    assert [r["signature"].count("v1,") for r in got] == [1, 2, 2, 2]
    assert [r["payload"]["type"] for r in got] == [
        "recording.available",
        "recording.available",
        "recording.available",
        "session.completed",
    ]
    listed = (await client.get("/api/v1/webhooks", headers=who.bearer)).json()["webhooks"]
    assert [w["id"] for w in listed] == [body["id"]] and "secret" not in listed[0]


async def test_retries_follow_the_schedule_and_retry_after_then_give_up(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, receiver: Receiver
) -> None:
    """A Retry-After pushes the next attempt back (the delivery is not due before it); a
    receiver failing every attempt of the schedule ends the delivery failed, and the next event
    of that session goes on after it."""
    path, body = await register(client, who, receiver, events=["recording.available"])
    receiver.configure(path, [body["secret"]], answers=[{"status": 503, "retry_after": "2"}])
    await recorded_session(client, runtime, who)
    run = dispatcher(runtime)
    assert run.run_until_idle() == 1  # the 503; the retry is not due for 2 s
    log = await client.get(f"/api/v1/webhooks/{body['id']}/deliveries", headers=who.bearer)
    (pending,) = log.json()["deliveries"]
    assert pending["status"] == "pending" and pending["last_status"] == 503
    assert pending["next_attempt_at"] > pending["last_attempt_at"]
    time.sleep(2.1)
    assert run.run_until_idle() == 1
    assert [r["answered"] for r in receiver.received(path)] == [503, 200]

    failing, failing_body = await register(client, who, receiver)
    receiver.configure(failing, [failing_body["secret"]], default={"status": 500})
    await recorded_session(client, runtime, who)
    run.run_until_idle()
    # Two events (available, completed), three attempts each (the schedule 0,0,0), in order.
    answered = [r["payload"]["type"] for r in receiver.received(failing)]
    assert answered == ["recording.available"] * 3 + ["session.completed"] * 3
    log = (
        await client.get(f"/api/v1/webhooks/{failing_body['id']}/deliveries", headers=who.bearer)
    ).json()["deliveries"]
    assert {d["status"] for d in log} == {"failed"}
    assert all(d["attempts"] == 3 for d in log)


async def test_the_api_checks_what_it_is_sent(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, receiver: Receiver
) -> None:
    """Every malformed registration or page parameter is a 400 that says what is wrong; a
    member key is 403; another tenant's endpoint and delivery are 404 like unknown ones."""
    url = receiver.url("/hook/x")
    bad = [
        b"[]",
        b"not json",
        b'{"url": 5}',
        b'{"url": "ftp://example.org/x"}',
        b'{"url": "http://user:pw@127.0.0.1/x"}',
        b'{"url": "http:///nohost"}',
        b'{"url": "http://127.0.0.1:99999/x"}',
        b'{"url": "http://127.0.0.1/x#frag"}',
        b'{"url": "http://127.0.0.1/\\u00e9"}',
        b'{"url": "http://127.0.0.1/' + b"a" * 3000 + b'"}',
        f'{{"url": "{url}", "events": []}}'.encode(),
        f'{{"url": "{url}", "events": ["recording.nope"]}}'.encode(),
        f'{{"url": "{url}", "events": "recording.available"}}'.encode(),
        f'{{"url": "{url}", "description": "{"d" * 201}"}}'.encode(),
        f'{{"url": "{url}", "secret": "mine"}}'.encode(),
    ]
    for body in bad:
        answer = await client.post(
            "/api/v1/webhooks",
            headers={**who.bearer, "content-type": "application/json"},
            content=body,
        )
        assert answer.status_code == 400, (body[:80], answer.text)
        assert answer.json()["message"], body
    _, made = await register(client, who, receiver)
    base = f"/api/v1/webhooks/{made['id']}"
    for query in (
        {"limit": "0"},
        {"limit": "x"},
        {"limit": "201"},
        {"cursor": ""},
        {"page": "1"},
        {"cursor": "a\x00b"},
    ):
        answer = await client.get(f"{base}/deliveries", params=query, headers=who.bearer)
        assert answer.status_code == 400, (query, answer.text)
    empty = await client.get(f"{base}/deliveries", params={"cursor": "dlv_x"}, headers=who.bearer)
    assert empty.json() == {"deliveries": [], "next_cursor": None}

    member = await client.post(
        f"/v1/{who.ws}/api-keys", headers=who.bearer, json={"name": "m", "role": "member"}
    )
    member_key = {"authorization": f"Bearer {member.json()['api_key']}"}
    assert (await client.get("/api/v1/webhooks", headers=member_key)).status_code == 403
    assert (await client.get("/api/v1/webhooks")).status_code == 401

    other = customer(runtime, FixedClock(0), "other")
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/rotate-secret")):
        theirs = await client.request(method, base + suffix, headers=other.bearer)
        nobody = await client.request(
            method, f"/api/v1/webhooks/ep_{uuid.uuid4().hex}{suffix}", headers=other.bearer
        )
        assert (theirs.status_code, theirs.json()) == (nobody.status_code, nobody.json())
        assert theirs.status_code == 404
    assert (await client.get("/api/v1/webhooks", headers=other.bearer)).json() == {"webhooks": []}
    assert (await client.delete(base, headers=who.bearer)).status_code == 204
    assert (await client.get(base, headers=who.bearer)).status_code == 404


async def test_receivers_on_private_addresses_are_refused_unless_allowed(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, receiver: Receiver
) -> None:
    """Without the operator's leave, a URL whose host is loopback, private, link-local... is
    refused at registration (400) and, should its DNS change later (rebinding), at delivery:
    the attempt fails without a byte sent."""
    strict = CheckAddress(AddressPolicy())
    for url in (
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
        "http://224.0.0.1/x",
        "http://100.64.0.1/x",
        "http://no-such-host.invalid/x",
        "http://127.1/x",
        "http://0x7f000001/x",
        "http://2130706433/x",
        "http://[::]/x",
        "http://[fd00::1]/x",
    ):
        with pytest.raises(InvalidRequest):
            strict(url)
    strict("https://93.184.215.14/x")  # a public address passes
    path, made = await register(client, who, receiver)  # allowed in this module's settings
    await recorded_session(client, runtime, who)
    rebound = Dispatcher(dispatcher(runtime).store, "strict", AddressPolicy(), timeout_seconds=2)
    assert rebound.run_once()
    assert receiver.received(path) == []
    log = await client.get(f"/api/v1/webhooks/{made['id']}/deliveries", headers=who.bearer)
    refused = [d for d in log.json()["deliveries"] if d["attempts"]]
    assert len(refused) == 1 and refused[0]["status"] == "pending"
    assert refused[0]["last_error"] == "refused: 127.0.0.1 is a loopback address"


async def test_a_receiver_slower_than_the_timeout_is_a_failed_attempt(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, receiver: Receiver
) -> None:
    """The whole exchange is bounded: a receiver that does not answer in time is an attempt
    that timed out, retried like any failure."""
    path, made = await register(client, who, receiver, events=["recording.available"])
    receiver.configure(path, [made["secret"]], answers=[{"status": 200, "delay": 3}])
    await recorded_session(client, runtime, who)
    hurried = Dispatcher(
        dispatcher(runtime).store,
        "hurried",
        AddressPolicy(allow_all=True),
        timeout_seconds=1,
        schedule=(0, 0, 0),
    )
    assert hurried.run_once()
    log = await client.get(f"/api/v1/webhooks/{made['id']}/deliveries", headers=who.bearer)
    (attempted,) = log.json()["deliveries"]
    assert attempted["status"] == "pending" and attempted["last_status"] is None
    assert attempted["last_error"] == "timed out after 1 s"
    assert hurried.run_once()  # retried (schedule 0): the receiver answers at once now
    assert [r["answered"] for r in receiver.received(path)] == [200, 200]


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to refuse, not to bind
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "public"),  # carrier-grade NAT: not global
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("93.184.215.14", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_policy(address: str, refused: str | None) -> None:
    """Only global unicast addresses by default; ``on`` allows all, CIDRs allow theirs."""
    found = AddressPolicy().refusal(ipaddress.ip_address(address))
    assert (found is None) if refused is None else (refused in (found or "")), found
    assert AddressPolicy(allow_all=True).refusal(ipaddress.ip_address(address)) is None
    allowed = AddressPolicy.parse("10.0.0.0/8, ::1/128")
    assert allowed.describe() == "10.0.0.0/8,::1/128"
    if address in ("10.0.0.1", "::1", "::ffff:10.0.0.1"):
        assert allowed.refusal(ipaddress.ip_address(address)) is None


def test_retry_schedule_and_retry_after() -> None:
    """Eight attempts on the specification's schedule, then none; Retry-After only delays,
    up to a bound; unreadable Retry-After values are ignored."""
    fail = Outcome(500)
    delays = [next_attempt_delay_ms(n, fail) for n in range(1, 9)]
    assert delays == [
        5_000,
        300_000,
        1_800_000,
        7_200_000,
        18_000_000,
        36_000_000,
        36_000_000,
        None,
    ]
    assert next_attempt_delay_ms(1, Outcome(503, retry_after_seconds=60)) == 60_000
    assert next_attempt_delay_ms(2, Outcome(503, retry_after_seconds=1)) == 300_000
    assert next_attempt_delay_ms(1, Outcome(503, retry_after_seconds=10**9)) == 36_000_000
    assert _retry_after("120") == 120
    assert _retry_after("99999999999999") is None
    assert _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert _retry_after(None) is None


async def test_hostile_receivers_cost_one_bounded_failed_attempt(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, receiver: Receiver
) -> None:
    """A redirect is not followed, oversized or garbled headers and headers dripped forever
    are each one failed attempt (the drip cut at the timeout); nothing escapes as an error."""
    path, made = await register(client, who, receiver, events=["recording.available"])
    target, target_body = await register(client, who, receiver, events=["legal_hold.set"])
    answers = [
        {
            "status": 302,
            "raw": f"HTTP/1.1 302 Found\r\nLocation: {receiver.url(target)}\r\n"
            "Content-Length: 0\r\n\r\n",
        },
        {"raw": "HTTP/1.1 200 OK\r\nX-Big: " + "a" * 70_000 + "\r\n\r\n"},
        {"raw": "NOT HTTP AT ALL\r\n\r\n"},
        {"raw": "HTTP/1.1 200 OK\r\n" + "X-Many: 1\r\n" * 200 + "\r\n"},
        {"drip": 50},
    ]
    receiver.configure(path, [made["secret"]], answers=answers)
    receiver.configure(target, [target_body["secret"]])
    await recorded_session(client, runtime, who)
    hostile = Dispatcher(
        dispatcher(runtime).store,
        "hostile",
        AddressPolicy(allow_all=True),
        timeout_seconds=1,
        schedule=(0,) * 10,
    )
    errors = []
    for _ in answers:
        assert hostile.run_once()
        log = await client.get(f"/api/v1/webhooks/{made['id']}/deliveries", headers=who.bearer)
        (delivery,) = log.json()["deliveries"]
        assert delivery["status"] == "pending", (len(errors), delivery)
        errors.append((delivery["last_status"], delivery["last_error"]))
    assert errors[0] == (302, "HTTP 302")
    assert all(status is None for status, _ in errors[1:]), errors
    assert errors[-1][1] == "timed out after 1 s"
    assert receiver.received(target) == []  # the redirect's target heard nothing
    assert hostile.run_once()  # the receiver's default: 200
    assert len(receiver.received(path)) == len(answers) + 1


async def test_two_workers_send_each_delivery_once_in_order(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, receiver: Receiver
) -> None:
    """Two dispatchers (eight threads) racing over one outbox: every event arrives exactly once
    and each session's events in their order."""
    path, _ = await register(client, who, receiver)
    sessions = [(await recorded_session(client, runtime, who))[0] for _ in range(5)]
    store = dispatcher(runtime).store
    workers = [
        Dispatcher(store, f"worker-{n}", AddressPolicy(allow_all=True), poll_seconds=0.05)
        for n in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 30
        while len(receiver.received(path)) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for worker in workers:
            worker.stop()
    got = verified(receiver, path)
    assert len(got) == 10
    assert len({e["data"]["session_id"] + e["type"] for e in got}) == 10
    for session_id in sessions:
        assert [e["type"] for e in got if e["data"]["session_id"] == session_id] == [
            "recording.available",
            "session.completed",
        ]


async def test_replay_sends_the_event_again_once(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, receiver: Receiver
) -> None:
    """A replay is a new delivery of the same event (same webhook-id); replaying again while it
    is pending returns that one instead of queueing a second."""
    path, made = await register(client, who, receiver, events=["recording.available"])
    await recorded_session(client, runtime, who)
    dispatcher(runtime).run_until_idle()
    base = f"/api/v1/webhooks/{made['id']}"
    (first,) = (await client.get(f"{base}/deliveries", headers=who.bearer)).json()["deliveries"]
    replays = [
        await client.post(f"{base}/deliveries/{first['id']}/replay", headers=who.bearer)
        for _ in range(3)
    ]
    assert [r.status_code for r in replays] == [202] * 3
    assert len({r.json()["id"] for r in replays}) == 1
    assert replays[0].json()["event_id"] == first["event_id"]
    dispatcher(runtime).run_until_idle()
    got = receiver.received(path)
    assert [r["id"] for r in got] == [first["event_id"]] * 2
    page = await client.get(f"{base}/deliveries", params={"limit": "1"}, headers=who.bearer)
    assert page.json()["next_cursor"] == page.json()["deliveries"][0]["id"]
    rest = await client.get(
        f"{base}/deliveries", params={"cursor": page.json()["next_cursor"]}, headers=who.bearer
    )
    assert [d["id"] for d in rest.json()["deliveries"]] == [first["id"]]


def test_a_failing_resolver_is_a_503_and_an_unknown_name_a_400(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The resolver down (EAI_AGAIN) is a dependency failing, said as Unavailable (503); a
    name that does not exist is the caller's mistake (400)."""
    import socket

    def down(*_: object, **__: object) -> None:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    check = CheckAddress(AddressPolicy())
    monkeypatch.setattr(socket, "getaddrinfo", down)
    with pytest.raises(Unavailable):
        check("https://receiver.example.org/hook")
    monkeypatch.undo()
    with pytest.raises(InvalidRequest):
        check("https://no-such-host.invalid/hook")


def test_the_cli_manages_endpoints_as_the_api_does(
    runtime: Runtime,
    who: Customer,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``tapevault webhooks``: add prints the secret once, list and show never do, rotate
    prints the new one, delete removes it; a refused URL is one line and exit status 1."""
    monkeypatch.setenv("TAPEVAULT_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("TAPEVAULT_DATABASE_URL", runtime.settings.database_url)
    tenant = ["--tenant", who.tenant.partner_id]

    def run(*args: str) -> tuple[int, str, str]:
        status = main(["webhooks", *args])
        out, err = capsys.readouterr()
        return status, out, err

    assert run("add", *tenant, receiver.url("/hook/cli"))[0] == 1  # loopback: not allowed
    monkeypatch.setenv("TAPEVAULT_WEBHOOK_ALLOW_PRIVATE", "127.0.0.1/32")
    status, out, _ = run("add", *tenant, receiver.url("/hook/cli"), "--events", "legal_hold.set")
    assert status == 0
    added = json.loads(out)
    assert added["secret"].startswith("whsec_") and added["events"] == ["legal_hold.set"]
    status, out, _ = run("list", *tenant, "--json")
    assert [e["id"] for e in json.loads(out)["webhooks"]] == [added["id"]]
    assert "whsec_" not in out
    assert "whsec_" not in run("show", *tenant, added["id"])[1]
    rotated = json.loads(run("rotate", *tenant, added["id"])[1])
    assert rotated["secret"] != added["secret"]
    assert run("deliveries", *tenant, added["id"])[0] == 0
    assert run("delete", *tenant, added["id"])[0] == 0
    status, _, err = run("show", *tenant, added["id"])
    assert status == 1 and "not found" in err
    status, _, err = run("add", *tenant, "ftp://example.org/x")
    assert status == 1 and "http or https" in err


async def test_settled_history_is_pruned_and_sequences_go_on(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, receiver: Receiver
) -> None:
    """Housekeeping's prune drops settled deliveries and the events nothing needs any more; a
    pending delivery, its event and the newest event of each subject stay, so the next event
    of a subject is numbered after the last one sent."""
    path, made = await register(client, who, receiver)
    first, _ = await recorded_session(client, runtime, who)
    await recorded_session(client, runtime, who)
    assert dispatcher(runtime).run_until_idle() == 4
    hold = {**who.bearer, "content-type": "application/json"}
    held = await client.put(
        f"/api/v1/sessions/{first}/hold", headers=hold, content=b'{"reason": "audit"}'
    )
    assert held.status_code == 200, held.text
    store = dispatcher(runtime).store
    with runtime.engine.connect() as conn:
        newest = conn.execute(select(func.max(webhook_events.c.created_ms))).scalar_one()
    before = max(store.database_now_ms(), newest) + 1

    assert store.prune(before, batch=1) == (4, 1)  # the first session's completion event goes
    assert store.prune(before) == (0, 0)
    base = f"/api/v1/webhooks/{made['id']}/deliveries"
    left = (await client.get(base, headers=who.bearer)).json()["deliveries"]
    assert [d["status"] for d in left] == ["pending"]

    dispatcher(runtime).run_until_idle()
    cleared = await client.delete(f"/api/v1/sessions/{first}/hold", headers=who.bearer)
    assert cleared.is_success
    dispatcher(runtime).run_until_idle()
    sent = [p for p in verified(receiver, path) if p["data"]["session_id"] == first]
    assert [(p["type"], p["data"]["sequence"]) for p in sent][-2:] == [
        ("legal_hold.set", 2),
        ("legal_hold.cleared", 3),
    ]


async def test_housekeeping_prunes_what_settled_more_than_90_days_ago(
    client: httpx.AsyncClient,
    runtime: Runtime,
    who: Customer,
    receiver: Receiver,
    clock: FixedClock,
) -> None:
    """The worker's housekeeping calls the prune with its window: nothing at 89 days, the
    settled deliveries at 91 (the purge's own recording.expired delivery, pending, stays)."""
    await register(client, who, receiver)
    await recorded_session(client, runtime, who)
    assert dispatcher(runtime).run_until_idle() == 2
    clock.set(dispatcher(runtime).store.database_now_ms() / 1000)  # deliveries use its clock
    housekeeping = runtime.worker.housekeeping
    assert housekeeping is not None

    def settled() -> int:
        with runtime.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(webhook_deliveries)).scalar())

    for days, left in ((89, 3), (2, 1)):
        clock.advance(days * 86400)
        housekeeping._next_prune = 0.0  # due now, as it is once a day
        housekeeping.run_due()
        assert settled() == left


class _RacingStore:
    """any_enabled's read began before an endpoint's commit; the change feed's wake-up for that
    commit arrives while the read is still in flight (a stale False)."""

    def __init__(self) -> None:
        self.dispatcher: Dispatcher | None = None
        self.answers = [False, True]
        self.reads = 0

    def any_enabled(self) -> bool:
        self.reads += 1
        answer = self.answers[min(self.reads - 1, len(self.answers) - 1)]
        if self.reads == 1 and self.dispatcher is not None:
            self.dispatcher.wake()  # the endpoint committed meanwhile, in another process
        return answer


def test_a_wake_up_during_the_endpoint_read_is_not_lost() -> None:
    """A wake-up that arrives while the dispatcher reads whether an endpoint exists makes it read
    again: the stale "none" must not be kept (the endpoint would wait IDLE_SECONDS, and the idle
    threads would spin on the wake event, set and never cleared, meanwhile)."""
    store = _RacingStore()
    hub = Dispatcher(store, "race", AddressPolicy())  # type: ignore[arg-type]
    store.dispatcher = hub
    assert hub._any_endpoint() is False
    assert hub._any_endpoint() is True
    assert store.reads == 2
    # Nothing more to tell: an idle thread waits again instead of returning at once.
    assert hub._any_endpoint() is True
    assert store.reads == 2
