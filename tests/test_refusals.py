"""Anonymous refusals are aggregated per source: the log stays bounded and its counts exact."""

from __future__ import annotations

from typing import Any

from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.audit import AuditEntry
from tapevault.core.clock import FixedClock
from tapevault.core.refusals import Refusals
from tapevault.runtime import Runtime
from tests.dialects import customer
from tests.support import integrated_records

ATTACKER = "203.0.113.9"
NEIGHBOUR = "198.51.100.4"
URLS = "/api/v1/ambient/session/s-1/recording"


def refused(ip: str, at_ms: int = 0, **kw: Any) -> AccessEvent:
    fields: dict[str, Any] = {"action": Action.AUTH_FAILURE, "status": 401, "error": "bad token"}
    fields.update(kw)
    return AccessEvent(actor=Actor(client_ip=ip, kind="suki_token"), at_ms=at_ms, **fields)


def count(event: AccessEvent | AuditEntry) -> int:
    """How many requests a record stands for: itself, or the ones it aggregates."""
    return int((event.detail or {}).get("aggregated", 1))


def test_first_refusal_written_then_counted_until_the_window_ends() -> None:
    """Per source and reason: the first refusal is written, the rest of the window is one
    aggregate record at its end, and the counts add up exactly, window after window."""
    table = Refusals(window_ms=1000)
    written: list[AccessEvent] = []
    for at in range(2500):  # one a millisecond; the writer's tick every 100 ms
        if table.admit(event := refused(ATTACKER, at_ms=at)):
            written.append(event)
        if at % 100 == 99:
            written += table.due(at)
    written += table.due(3000, final=True)
    assert sum(count(e) for e in written) == 2500
    assert len(written) == 6  # three windows: each its first refusal and one aggregate
    first, aggregate = written[:2]
    assert first.at_ms == 0 and first.detail is None
    assert aggregate.detail == {"aggregated": 1099, "first_at_ms": 1, "last_at_ms": 1099}
    assert aggregate.actor.client_ip == ATTACKER and aggregate.status == 401
    assert aggregate.error == "bad token" and aggregate.action is Action.AUTH_FAILURE


def test_sources_and_reasons_are_kept_apart_and_known_callers_never_aggregated() -> None:
    """Another address or another reason is its own first record; a refusal of an identified
    caller and anything that is not a refusal are always written."""
    table = Refusals()
    assert table.admit(refused(ATTACKER))
    assert table.admit(refused(NEIGHBOUR))
    assert table.admit(refused(ATTACKER, error="token expired"))
    assert table.admit(refused(ATTACKER, action=Action.MEDIA_READ, status=403))
    assert not table.admit(refused(ATTACKER))
    known = AccessEvent(Action.SESSION_READ, Actor(partner_id="p", client_ip=ATTACKER), 404, 0)
    served = AccessEvent(Action.MEDIA_READ, Actor(client_ip=ATTACKER), 410, 0)
    assert all(table.admit(known) for _ in range(3)) and table.admit(served)
    assert len(table) == 4


def test_memory_is_bounded_and_overflow_counted_under_one_key() -> None:
    """Past the tracked sources, refusals of new addresses are counted under one overflow
    entry per action and status: still exact, still a bounded number of records."""
    table = Refusals(max_sources=10)
    written = [e for i in range(5000) if table.admit(e := refused(f"10.0.{i // 250}.{i % 250}"))]
    assert len(written) == 10 and len(table) == 11
    written += table.due(0, final=True)
    assert len(written) == 11 and sum(count(e) for e in written) == 5000
    (overflow,) = [e for e in written if (e.detail or {}).get("sources") == "overflow"]
    assert overflow.actor.client_ip is None and count(overflow) == 4990


async def test_ten_thousand_bad_tokens_from_one_source_are_two_records(
    audited: Runtime, clock: FixedClock
) -> None:
    """10,000 unauthenticated requests from one address (through the application) leave O(1)
    records whose counts add up to 10,000; another address keeps its own."""
    app = audited.asgi()
    who = customer(audited, clock)
    statuses = [await get(app, URLS, ATTACKER, {"sdp_suki_token": "x.y.z"}) for _ in range(10_000)]
    statuses += [await get(app, URLS, NEIGHBOUR, {"sdp_suki_token": "y"}) for _ in range(3)]
    assert set(statuses) == {401}
    assert await get(app, "/api/v1/audit", ATTACKER, who.bearer) == 200
    assert audited.audit is not None
    clock.advance(61)  # the window ends
    audited.audit.flush()
    audited.audit.flush()  # the first flush's cycle folded: its records are written by now
    records = [r.entry for r in integrated_records(audited) if r.entry.action == "auth.failure"]
    mine = [r for r in records if r.client_ip == ATTACKER]
    assert len(mine) == 2 and sum(count(r) for r in mine) == 10_000
    assert sum(count(r) for r in records if r.client_ip == NEIGHBOUR) == 3


async def get(app: Any, path: str, client_ip: str, headers: dict[str, str]) -> int:
    """One request straight through the ASGI application (no HTTP client: 10,000 are fast)."""
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"vault.test")]
        + [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": (client_ip, 40000),
        "server": ("vault.test", 443),
    }
    await app(scope, receive, send)
    return status
