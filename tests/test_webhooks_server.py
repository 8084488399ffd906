"""Webhooks from a real ``tapevault serve`` to a real receiver process: a receiver down for a
while gets every event once it is back, and a server killed while sending sends again what it
had not confirmed. The CLI manages the endpoints, as an operator would."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.receiver import Receiver
from tests.server import Server, tapevault
from tests.support import make_session, wait_for

FAST = {
    "TAPEVAULT_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8",
    "TAPEVAULT_WEBHOOK_RETRY_SCHEDULE": ",".join(["0"] + ["1"] * 19),
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data")
    try:
        yield srv
    finally:
        srv.close()


def add_endpoint(srv: Server, partner_id: str, receiver: Receiver) -> tuple[str, dict[str, Any]]:
    path = f"/hook/{uuid.uuid4().hex}"
    out = tapevault("webhooks", "add", "--tenant", partner_id, receiver.url(path), env=srv.env)
    endpoint: dict[str, Any] = json.loads(out)
    return path, endpoint


def deliveries(srv: Server, bearer: dict[str, str], webhook_id: str) -> list[dict[str, Any]]:
    answer = requests.get(
        f"{srv.base}/api/v1/webhooks/{webhook_id}/deliveries", headers=bearer, timeout=10
    )
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["deliveries"]
    return found


def test_a_receiver_down_for_a_while_gets_every_event_when_it_is_back(
    server: Server, receiver: Receiver
) -> None:
    """While the receiver is down, attempts fail and are retried; once it is back every event
    arrives, verified, in order per session; a replay sends one again with the same id."""
    srv = server.start(**FAST)
    tenant = srv.tenant()
    bearer = {"authorization": f"Bearer {tenant['api_key']}"}
    path, endpoint = add_endpoint(srv, tenant["partner_id"], receiver)
    token = srv.token(tenant["partner_id"])
    receiver.stop()
    try:
        sessions = [make_session(srv, token, seconds=0.3)[0] for _ in range(2)]
        wait_for(
            lambda: any(d["attempts"] >= 2 for d in deliveries(srv, bearer, endpoint["id"])),
            what="attempts to fail while the receiver is down",
            every=0.2,
        )
    finally:
        receiver.start()
    receiver.configure(path, [endpoint["secret"]])

    def all_delivered() -> list[dict[str, Any]] | None:
        log = deliveries(srv, bearer, endpoint["id"])
        return log if len(log) == 4 and all(d["status"] == "delivered" for d in log) else None

    log = wait_for(all_delivered, what="every delivery to be delivered", every=0.2)
    got = receiver.received(path)
    assert all(r["verified_by"] == [0] for r in got), got
    events = [(r["payload"]["data"]["session_id"], r["payload"]["type"]) for r in got]
    assert sorted(events) == sorted(
        (s, t) for s in sessions for t in ("recording.available", "session.completed")
    )
    for session_id in sessions:
        assert [t for s, t in events if s == session_id] == [
            "recording.available",
            "session.completed",
        ]
    assert any(d["attempts"] >= 3 for d in log)  # failed twice while down, then delivered

    listed = tapevault(
        "webhooks", "deliveries", "--tenant", tenant["partner_id"], endpoint["id"], env=srv.env
    )
    assert listed.count("delivered") == 4
    first = log[-1]
    replayed = tapevault(
        "webhooks",
        "replay",
        "--tenant",
        tenant["partner_id"],
        endpoint["id"],
        first["id"],
        "--json",
        env=srv.env,
    )
    assert json.loads(replayed)["event_id"] == first["event_id"]
    wait_for(lambda: len(receiver.received(path)) == 5, what="the replay", every=0.2)
    assert receiver.received(path)[-1]["id"] == first["event_id"]


def test_a_killed_server_sends_again_what_it_had_not_confirmed(
    server: Server, receiver: Receiver
) -> None:
    """SIGKILL while a delivery waits for its receiver: the restarted server frees the dead
    process's lease and sends it again (same webhook-id); nothing is lost, the order holds."""
    srv = server.start(**FAST, TAPEVAULT_WEBHOOK_TIMEOUT="60")
    tenant = srv.tenant()
    bearer = {"authorization": f"Bearer {tenant['api_key']}"}
    path, endpoint = add_endpoint(srv, tenant["partner_id"], receiver)
    receiver.configure(path, [endpoint["secret"]], answers=[{"status": 200, "delay": 30}])
    make_session(srv, srv.token(tenant["partner_id"]), seconds=0.3)
    wait_for(lambda: len(receiver.received(path)) == 1, what="the first attempt", every=0.1)
    srv.kill()
    srv.start(**FAST, TAPEVAULT_WEBHOOK_TIMEOUT="60")

    def delivered() -> list[dict[str, Any]] | None:
        log = deliveries(srv, bearer, endpoint["id"])
        return log if len(log) == 2 and all(d["status"] == "delivered" for d in log) else None

    wait_for(delivered, what="both deliveries after the restart", every=0.2)
    got = receiver.received(path)
    assert [r["payload"]["type"] for r in got] == [
        "recording.available",  # the attempt the killed server never saw answered
        "recording.available",
        "session.completed",
    ]
    assert got[0]["id"] == got[1]["id"]  # the same message: receivers deduplicate on it
