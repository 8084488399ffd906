"""WebSocket authentication failures (close 4401) are in the access log, as the README says every
authentication failure is: the live stream through ASGI and on the direct path, and Twilio."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from tapevault.core.audit import AuditEntry
from tapevault.core.clock import FixedClock
from tapevault.core.model import SessionKind
from tapevault.http.wsdirect import DirectStream
from tapevault.http.wsframe import CLOSE, parse_close
from tapevault.runtime import Runtime
from tests.dialects import customer
from tests.support import integrated_records

STREAM = "/api/v1/ambient/session/{}/stream"
CLIENT = "192.0.2.44"


async def websocket(
    runtime: Runtime, path: str, headers: dict[str, str], messages: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Open a WebSocket through the ASGI application; the close message it ended with."""
    incoming: list[dict[str, Any]] = [{"type": "websocket.connect"}]
    incoming += [{"type": "websocket.receive", "text": m} for m in messages]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # a client that says nothing more
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "wss",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": (CLIENT, 40000),
        "server": ("vault.test", 443),
        "subprotocols": [],
    }
    await asyncio.wait_for(runtime.asgi()(scope, receive, send), 10)
    (close,) = [m for m in sent if m["type"] == "websocket.close"]
    return close


def auth_failures(runtime: Runtime) -> list[AuditEntry]:
    assert runtime.audit is not None
    runtime.audit.flush()
    return [r.entry for r in integrated_records(runtime) if r.entry.action == "auth.failure"]


async def test_live_stream_bad_token_through_asgi_is_logged(
    audited: Runtime, clock: FixedClock
) -> None:
    """A bad token on the ASGI stream route closes 4401 and writes an auth.failure record
    with the client's address and the session it tried."""
    who = customer(audited, clock)
    created = audited.vault.sessions.create_session(who.tenant, SessionKind.AMBIENT)
    path = STREAM.format(created.session_id)
    close = await websocket(audited, path, {"sdp_suki_token": "x.y.z", "user-agent": "probe/1"})
    assert close["code"] == 4401
    (record,) = auth_failures(audited)
    assert record.status == 401 and record.mode == "live_stream"
    assert record.client_ip == CLIENT and record.user_agent == "probe/1"
    assert record.session_id == created.session_id and record.actor_kind == "suki_token"


async def test_twilio_bad_token_is_logged_and_aggregated(
    audited: Runtime, clock: FixedClock
) -> None:
    """A Twilio start message with a bad token closes 4401 and writes an auth.failure; more
    from the same source are counted like HTTP refusals, into one record when the window ends."""
    start = '{"event":"start","start":{"callSid":"CA1","customParameters":{"sdp_suki_token":"x"}}}'
    for _ in range(3):
        close = await websocket(audited, "/twilio/media-stream", {}, (start,))
        assert close["code"] == 4401
    (record,) = auth_failures(audited)
    assert record.mode == "twilio_stream" and record.client_ip == CLIENT
    clock.advance(61)
    auth_failures(audited)  # the writer's next tick folds the window
    first, aggregate = auth_failures(audited)
    assert first == record and (aggregate.detail or {})["aggregated"] == 2


class Transport:
    """Just enough of an asyncio transport for a refused direct stream."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return (CLIENT, 40000) if name == "peername" else None


async def test_live_stream_bad_ticket_on_the_direct_path_is_logged(
    audited: Runtime, clock: FixedClock
) -> None:
    """On the direct path (``tapevault serve``'s), a used-up ticket closes 4401 and writes an
    auth.failure with the peer's address."""
    who = customer(audited, clock)
    session_id = audited.vault.sessions.create_session(who.tenant, SessionKind.AMBIENT).session_id
    tasks: list[asyncio.Task[None]] = []
    direct = DirectStream(
        audited.streams,
        session_id,
        {"ticket": "not-a-ticket"},
        {"user-agent": "browser/1"},
        max_size=1 << 20,
        ping_interval=None,
        ping_timeout=None,
        on_task=tasks.append,
        on_lost=lambda _: None,
    )
    transport = Transport()
    direct.connection_made(cast(Any, transport))
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert transport.out[0] & 0x0F == CLOSE
    assert parse_close(bytes(transport.out[2:]))[0] == 4401
    direct.connection_lost(None)
    (record,) = auth_failures(audited)
    assert record.actor_kind == "stream_ticket" and record.client_ip == CLIENT
    assert record.mode == "live_stream" and record.session_id == session_id
