"""In-process clients of every dialect over one runtime, for the API tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from tapevault.auth.kore import issue_kore_token
from tapevault.auth.suki import issue_token
from tapevault.core.clock import FixedClock
from tapevault.core.model import Tenant
from tapevault.core.tenants import NewTenant
from tapevault.runtime import Runtime

BASE = "https://vault.test"


@dataclass
class Customer:
    """One tenant and a credential of each dialect."""

    tenant: Tenant
    api_key: str
    suki: dict[str, str]
    kore: dict[str, str]

    @property
    def bearer(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    @property
    def ws(self) -> str:
        return self.tenant.workspace_id

    @property
    def bot(self) -> str:
        return self.tenant.bot_id


def customer(runtime: Runtime, clock: FixedClock, name: str = "clinic") -> Customer:
    created: NewTenant = runtime.vault.tenants.create(name, 7 * 86400)
    tenant = created.tenant
    return Customer(
        tenant=tenant,
        api_key=created.api_key,
        suki={"sdp_suki_token": issue_token(tenant, now=clock.now(), ttl_seconds=3600)},
        kore={"auth": issue_kore_token(tenant, now=clock.now(), ttl_seconds=3600)},
    )


@contextlib.asynccontextmanager
async def asgi_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the runtime's application, in process (no sockets)."""
    transport = httpx.ASGITransport(app=runtime.asgi())
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


def local(url: str) -> str:
    """An absolute URL of the test server as a path for the in-process client."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == BASE
    return urlunsplit(("", "", parts.path, parts.query, ""))


async def upload_channel(
    client: httpx.AsyncClient,
    runtime: Runtime,
    who: Customer,
    call_sid: str,
    channel: str,
    body: bytes,
    **query: str | int,
) -> httpx.Response:
    """Upload one channel of a call and let the worker finish what is queued."""
    response = await client.post(
        f"/v1/{who.ws}/calls/{call_sid}/audio",
        params={"channel": channel, **query},
        headers={**who.bearer, "content-type": "audio/wav"},
        content=body,
    )
    runtime.worker.run_until_idle()
    return response
