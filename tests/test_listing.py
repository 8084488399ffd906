"""The native listing over HTTP: GET /api/v1/sessions and /api/v1/sessions/{id}/recordings,
with every filter, pages, member and admin keys, tenant isolation, 400s, and one time format
(ISO 8601 UTC with milliseconds) in every native answer."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.auth.suki import issue_token
from tapevault.core.clock import FixedClock
from tapevault.runtime import Runtime
from tests.dialects import Customer, asgi_client, customer, upload_channel

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TIME_FIELDS = {
    "created_at",
    "ended_at",
    "deleted_at",
    "expires_at",
    "purged_at",
    "media_start_at",
    "since",
    "at",
}
CALL = "CA" + "d" * 32


async def ambient(
    client: httpx.AsyncClient,
    runtime: Runtime,
    suki: dict[str, str],
    *,
    form: bool = False,
    audio: bool = True,
    end: bool = True,
) -> str:
    kind = "form-filling" if form else "ambient"
    created = await client.post(f"/api/v1/{kind}/session/create", headers=suki)
    assert created.status_code == 201, created.text
    session_id: str = created.json()["ambient_session_id"]
    if audio:
        up = await client.post(
            f"/api/v1/ambient/session/{session_id}/audio",
            headers={**suki, "content-type": "audio/wav"},
            content=tone_wav_bytes(0.3),
        )
        assert up.status_code == 202, up.text
        runtime.worker.run_until_idle()
    if end:
        await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=suki)
        runtime.worker.run_until_idle()
    return session_id


async def listed(client: httpx.AsyncClient, who: Customer, **params: str) -> list[str]:
    answer = await client.get("/api/v1/sessions", params=params, headers=who.bearer)
    assert answer.status_code == 200, answer.text
    return [s["session_id"] for s in answer.json()["sessions"]]


async def member_key(client: httpx.AsyncClient, who: Customer) -> dict[str, str]:
    made = await client.post(
        f"/v1/{who.ws}/api-keys", headers=who.bearer, json={"name": "qa", "role": "member"}
    )
    assert made.status_code == 201, made.text
    return {"authorization": f"Bearer {made.json()['api_key']}"}


def times_in(body: Any) -> list[tuple[str, Any]]:
    """Every (name, value) of a time field anywhere in a JSON body."""
    found: list[tuple[str, Any]] = []
    if isinstance(body, dict):
        for key, value in body.items():
            if key in TIME_FIELDS and not isinstance(value, dict):
                found.append((key, value))
            found += times_in(value)
    elif isinstance(body, list):
        for item in body:
            found += times_in(item)
    return found


async def test_every_filter_over_http(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """Sessions of each kind and state, one filter at a time: each finds exactly its own."""
    who = customer(runtime, clock)
    doctor = {
        "sdp_suki_token": issue_token(
            who.tenant, now=clock.now(), ttl_seconds=3600, provider_id="dr-7"
        )
    }
    done = await ambient(client, runtime, doctor)  # completed, by dr-7
    clock.advance(10)
    form = await ambient(client, runtime, who.suki, form=True, audio=False, end=False)  # created
    clock.advance(10)
    await upload_channel(client, runtime, who, CALL, "inbound", tone_wav_bytes(0.3))
    call = (await client.get(f"/api/v1/sessions/{CALL}", headers=who.bearer)).json()["session_id"]
    clock.advance(10)
    held = await ambient(client, runtime, who.suki)
    hold = await client.put(
        f"/api/v1/sessions/{held}/hold", headers=who.bearer, json={"reason": "case 17"}
    )
    assert hold.status_code == 200
    clock.advance(10)
    short = await ambient(client, runtime, who.suki, end=False)  # in progress
    await client.put(
        f"/api/v1/sessions/{short}/retention", headers=who.bearer, json={"retention": "1h"}
    )
    start = int(clock.now()) - 40

    assert await listed(client, who) == [short, held, call, form, done]
    assert await listed(client, who, created_after=str(start + 10)) == [short, held, call, form]
    assert await listed(
        client, who, created_after=str(start + 10), created_before=str(start + 30)
    ) == [call, form]
    iso_after = "2027-01-15T08:00:20Z"  # START + 20 s
    assert await listed(client, who, created_after=iso_after) == [short, held, call]
    assert await listed(client, who, status="completed") == [held, done]
    assert await listed(client, who, status="created,in_progress") == [short, call, form]
    assert await listed(client, who, kind="form_filling") == [form]
    assert await listed(client, who, kind="call") == [call]
    assert await listed(client, who, external_id=CALL) == [call]
    assert await listed(client, who, provider_id="dr-7") == [done]
    assert await listed(client, who, on_hold="true") == [held]
    assert await listed(client, who, on_hold="false") == [short, call, form, done]
    assert await listed(client, who, expiring_before=str(int(clock.now()) + 7200)) == [short]
    assert await listed(client, who, kind="ambient", status="completed", on_hold="false") == [done]
    page = (await client.get("/api/v1/sessions", headers=who.bearer)).json()
    by_id = {s["session_id"]: s for s in page["sessions"]}
    assert by_id[done]["provider_id"] == "dr-7" and by_id[done]["recording_count"] == 1
    assert by_id[held]["hold"]["reason"] == "case 17"
    assert by_id[call]["external_id"] == CALL and by_id[call]["kind"] == "call"
    assert by_id[form]["recording_count"] == 0 and by_id[form]["expires_at"] is None


async def test_pages_follow_the_cursor_to_the_end(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """Nine sessions in pages of four, sessions created between pages: the pages hold the nine
    once each, newest first, and the last page says there is no next one."""
    who = customer(runtime, clock)
    made = []
    for _ in range(9):
        made.append(await ambient(client, runtime, who.suki, audio=False, end=False))
        clock.advance(1)
    seen: list[str] = []
    params = {"limit": "4"}
    while True:
        answer = await client.get("/api/v1/sessions", params=params, headers=who.bearer)
        assert answer.status_code == 200, answer.text
        seen += [s["session_id"] for s in answer.json()["sessions"]]
        await ambient(client, runtime, who.suki, audio=False, end=False)  # newer: not this run's
        clock.advance(1)
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
        params = {"limit": "4", "cursor": cursor}
    assert seen == list(reversed(made))


async def test_member_keys_find_and_read_but_change_nothing(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """A member key lists sessions, reads one and its recordings; holds, deletion and the
    access log stay the admin's (403); no key at all is a 401."""
    who = customer(runtime, clock)
    session_id = await ambient(client, runtime, who.suki)
    member = await member_key(client, who)
    assert await listed(client, Customer(who.tenant, member["authorization"][7:], {}, {})) == [
        session_id
    ]
    view = await client.get(f"/api/v1/sessions/{session_id}", headers=member)
    assert view.status_code == 200 and view.json()["status"] == "completed"
    recordings = await client.get(f"/api/v1/sessions/{session_id}/recordings", headers=member)
    assert recordings.status_code == 200
    (rec,) = recordings.json()["recordings"]
    assert rec["status"] == "available" and rec["sequence_number"] == 1
    assert (
        await client.delete(f"/api/v1/sessions/{session_id}", headers=member)
    ).status_code == 403
    held = await client.put(
        f"/api/v1/sessions/{session_id}/hold", headers=member, json={"reason": "x"}
    )
    assert held.status_code == 403
    assert (await client.get("/api/v1/audit", headers=member)).status_code == 403
    assert (await client.get("/api/v1/sessions")).status_code == 401
    gone = await client.delete(f"/api/v1/sessions/{session_id}", headers=who.bearer)
    assert gone.status_code == 200  # the admin still may


async def test_listing_never_shows_another_tenants_sessions(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """B's sessions are in no page of A's, whatever the filter (B's call SID, B's cursor), and
    B's session id in the recordings route is A's 404."""
    a, b = customer(runtime, clock, "A"), customer(runtime, clock, "B")
    own = await ambient(client, runtime, a.suki)
    clock.advance(1)  # B's sessions are newer: B's cursor positions A's own before it
    foreign = await ambient(client, runtime, b.suki)
    clock.advance(1)
    await upload_channel(client, runtime, b, CALL, "inbound", tone_wav_bytes(0.3))
    assert await listed(client, a) == [own]
    assert await listed(client, a, external_id=CALL) == []
    b_page = (await client.get("/api/v1/sessions", params={"limit": "1"}, headers=b.bearer)).json()
    assert b_page["next_cursor"] is not None
    assert await listed(client, a, cursor=b_page["next_cursor"]) == [own]
    for session in (foreign, CALL):
        answer = await client.get(f"/api/v1/sessions/{session}/recordings", headers=a.bearer)
        assert answer.status_code == 404
        assert answer.json() == {"code": 404, "message": "Session not found."}


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("status=finished", "status"),
        ("kind=podcast", "kind"),
        ("created_after=tomorrow", "created_after"),
        ("created_before=2026-02-30", "created_before"),
        ("expiring_before=1e9", "expiring_before"),
        ("on_hold=yes", "on_hold"),
        ("external_id=", "external_id"),
        ("provider_id=" + "p" * 201, "provider_id"),
        ("limit=501", "limit"),
        ("limit=-1", "limit"),
        ("cursor=bm9wZQ", "cursor"),
        ("statuss=completed", "statuss"),
        ("status=created&status=failed", "status"),
        ("external_id=a%00b", "external_id"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock, query: str, names: str
) -> None:
    """Each bad value, unknown or repeated parameter: 400 in the {code, message} shape, the
    message naming the parameter."""
    who = customer(runtime, clock)
    answer = await client.get(f"/api/v1/sessions?{query}", headers=who.bearer)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == 400 and names in answer.json()["message"]


async def test_every_native_time_is_iso_utc_with_milliseconds(
    audited: Runtime, clock: FixedClock
) -> None:
    """The listing, a session, its recordings, a hold, retention, deletion, the access log and
    one recording's history: every time field is 2026-12-02T16:45:03.123Z, none Unix."""
    async with asgi_client(audited) as client:
        await check_times(client, audited, clock)


async def check_times(client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock) -> None:
    who = customer(runtime, clock)
    clock.advance(0.123)
    session_id = await ambient(client, runtime, who.suki)
    await upload_channel(
        client, runtime, who, CALL, "inbound", tone_wav_bytes(0.3), media_start_epoch_ms=1
    )
    recording_id = (
        await client.get(f"/api/v1/sessions/{session_id}/recordings", headers=who.bearer)
    ).json()["recordings"][0]["recording_id"]
    bodies = [
        (await client.get("/api/v1/sessions", headers=who.bearer)).json(),
        (await client.get(f"/api/v1/sessions/{session_id}", headers=who.bearer)).json(),
        (await client.get(f"/api/v1/sessions/{CALL}/recordings", headers=who.bearer)).json(),
        (
            await client.put(
                f"/api/v1/sessions/{session_id}/hold", headers=who.bearer, json={"reason": "r"}
            )
        ).json(),
        (
            await client.put(
                f"/api/v1/sessions/{session_id}/retention",
                headers=who.bearer,
                json={"retention": "30d"},
            )
        ).json(),
        (
            await client.put(
                f"/api/v1/recordings/{recording_id}/retention",
                headers=who.bearer,
                json={"retention": "31d"},
            )
        ).json(),
        (await client.get("/api/v1/audit", headers=who.bearer)).json(),
        (await client.get(f"/api/v1/recordings/{recording_id}/access", headers=who.bearer)).json(),
    ]
    await client.delete(f"/api/v1/sessions/{session_id}/hold", headers=who.bearer)
    bodies.append(
        (await client.delete(f"/api/v1/sessions/{session_id}", headers=who.bearer)).json()
    )
    found = [pair for body in bodies for pair in times_in(body)]
    names = {name for name, value in found if value is not None}
    assert names >= TIME_FIELDS - {"ended_at"} - {"deleted_at"}, names
    wrong = [(n, v) for n, v in found if v is not None and not ISO.fullmatch(str(v))]
    assert not wrong, wrong
    view = bodies[1]
    assert view["created_at"] == "2027-01-15T08:00:00.123Z"
    call_recording = bodies[2]["recordings"][0]
    assert call_recording["media_start_at"] == "1970-01-01T00:00:00.001Z"
    assert "media_start_epoch_ms" not in call_recording and "at_ms" not in bodies[6]["records"][0]


async def test_long_provider_id_is_refused_not_a_server_error(
    client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock
) -> None:
    """A provider id longer than the column holds is a 400 at session creation, never a 500."""
    who = customer(runtime, clock)
    answer = await client.post(
        "/api/v1/ambient/session/create",
        headers={**who.suki, "sdp_provider_id": "p" * 201},
    )
    assert answer.status_code == 400, answer.text
    assert "sdp_provider_id" in answer.json()["message"]
