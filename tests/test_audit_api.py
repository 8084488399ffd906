"""The access-log API's filters: anything it cannot filter by is a 400 naming the parameter,
never a 200 with an empty page."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tapevault.core.access import Action
from tapevault.core.clock import FixedClock
from tapevault.runtime import Runtime
from tests.dialects import Customer, asgi_client, customer


@pytest.fixture
async def client(audited: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of ``audited``, the runtime with the durable access log."""
    async with asgi_client(audited) as c:
        yield c


@pytest.fixture
def who(audited: Runtime, clock: FixedClock) -> Customer:
    return customer(audited, clock)


BAD_FILTERS = [
    ({"action": "nonsense"}, "action"),
    ({"action": ""}, "action"),
    ({"action": "AUTH.FAILURE"}, "action"),
    ({"session_id": ""}, "session_id"),
    ({"recording_id": ""}, "recording_id"),
    ({"actor": ""}, "actor"),
    ({"since": "yesterday"}, "since"),
    ({"until": "2026-13-01"}, "until"),
    ({"since": ""}, "since"),
    ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "-1"}, "limit"),
    ({"cursor": "abc"}, "cursor"),
    ({"cursor": "-5"}, "cursor"),
    ({"cursor": "9" * 19}, "cursor"),
    ({"actoin": "audit.read"}, "actoin"),
]


@pytest.mark.parametrize(("params", "named"), BAD_FILTERS)
async def test_a_filter_it_cannot_apply_is_a_400_naming_it(
    client: httpx.AsyncClient, who: Customer, params: dict[str, str], named: str
) -> None:
    """Each invalid filter (unknown action, bad time, limit, cursor, unknown name) is a 400
    whose message names the parameter."""
    response = await client.get("/api/v1/audit", params=params, headers=who.bearer)
    assert response.status_code == 400, response.text
    assert named in response.json()["message"]


async def test_every_action_of_the_vocabulary_is_a_valid_filter(
    client: httpx.AsyncClient, who: Customer
) -> None:
    """Every action the log writes can be asked for; times and pages at their bounds work."""
    for action in Action:
        response = await client.get(
            "/api/v1/audit", params={"action": action.value}, headers=who.bearer
        )
        assert response.status_code == 200, (action, response.text)
    bounds = {"since": "0", "until": "2100-01-01T00:00:00Z", "limit": "1000", "cursor": "0"}
    assert (await client.get("/api/v1/audit", params=bounds, headers=who.bearer)).status_code == 200


async def test_one_recordings_history_validates_its_filters_too(
    client: httpx.AsyncClient, who: Customer
) -> None:
    """The per-recording history takes the same filters (not the ids, which its path sets)."""
    path = "/api/v1/recordings/01ARZ3NDEKTSV4RRFFQ69G5FAV/access"
    bad = await client.get(path, params={"action": "nonsense"}, headers=who.bearer)
    assert bad.status_code == 400 and "action" in bad.json()["message"]
    foreign = await client.get(path, params={"session_id": "s"}, headers=who.bearer)
    assert foreign.status_code == 400 and "session_id" in foreign.json()["message"]
