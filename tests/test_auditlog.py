"""The access-log writer under failure: every failure answers 503 (never a hang), /healthz says
so, and the writer recovers by itself when the cause goes; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.clock import FixedClock
from tapevault.errors import Unavailable
from tapevault.runtime import Runtime
from tests.dialects import Customer, asgi_client, customer, local, upload_channel
from tests.support import integrated_records

CALL = "CA" + "e" * 32
ANSWER_WITHIN = 15.0  # seconds: far above any answer; only a hang gets near it


@pytest.fixture
async def client(audited: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of ``audited``, the runtime with the durable access log."""
    async with asgi_client(audited) as c:
        yield c


class Switch:
    """A failure that is on until it is turned off."""

    def __init__(self) -> None:
        self.on = True


def emfile_exclusive(audited: Runtime, switch: Switch, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's writer lock fails as opening its lock file does with too many open files."""
    real = audited.audit_store.exclusive

    def exclusive() -> contextlib.AbstractContextManager[None]:
        if switch.on:
            raise OSError(errno.EMFILE, "Too many open files")
        return real()

    monkeypatch.setattr(audited.audit_store, "exclusive", exclusive)


async def answer(request: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """The response, or a test failure if none comes in ``ANSWER_WITHIN`` (a hang)."""
    return await asyncio.wait_for(request(), ANSWER_WITHIN)


async def audit_read(client: httpx.AsyncClient, who: Customer) -> int:
    """The status of an audit read (its record is waited for), answered in time."""
    return (await answer(lambda: client.get("/api/v1/audit", headers=who.bearer))).status_code


async def until_healthy(client: httpx.AsyncClient) -> httpx.Response:
    deadline = time.monotonic() + ANSWER_WITHIN
    while True:
        health = await client.get("/healthz")
        if health.status_code == 200 or time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.05)


async def served_session(client: httpx.AsyncClient, audited: Runtime, who: Customer) -> str:
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id: str = created.json()["ambient_session_id"]
    await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=tone_wav_bytes(0.5),
    )
    audited.worker.run_until_idle()
    await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=who.suki)
    return session_id


async def test_writer_lock_failure_answers_503_everywhere_then_recovers(
    client: httpx.AsyncClient,
    audited: Runtime,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EMFILE on the writer's lock: every audited request of every dialect answers 503 with a
    reason (no hang), /healthz 503; once files can be opened again all of it works again."""
    who = customer(audited, clock)
    session_id = await served_session(client, audited, who)
    await upload_channel(client, audited, who, CALL, "inbound", tone_wav_bytes(0.5))
    urls = await client.get(f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki)
    media = local(urls.json()["recordings"][0]["presigned_url"])
    requests: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
        "suki": lambda: client.get(
            f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki
        ),
        "amigo": lambda: client.get(f"/v1/{who.ws}/recordings/{CALL}/urls", headers=who.bearer),
        "kore": lambda: client.get(
            f"/api/public/bot/{who.bot}/v2/recordings",
            params={"sessionId": session_id},
            headers=who.kore,
        ),
        "admin": lambda: client.get("/api/v1/audit", headers=who.bearer),
        "media": lambda: client.get(media, headers={"range": "bytes=0-3"}),
    }
    switch = Switch()
    emfile_exclusive(audited, switch, monkeypatch)
    for name, request in requests.items():
        refused = await answer(request)
        assert refused.status_code == 503, name
        assert "access log" in refused.text and b"RIFF" not in refused.content, name
    health = await client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable" and "access log" in health.json()["reason"]
    switch.on = False
    assert (await until_healthy(client)).json() == {"status": "ok"}
    for name, request in requests.items():
        response = await answer(request)
        assert response.status_code in (200, 206), (name, response.text)


async def test_failing_appends_then_recovery_without_any_request(
    client: httpx.AsyncClient,
    audited: Runtime,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Appends raising EMFILE: 503 and unhealthy; when they work again /healthz turns 200 by
    itself (the writer retries), and records nobody waited for were kept and written."""
    who = customer(audited, clock)
    store = audited.audit_store
    real = store.write
    switch = Switch()

    def write(*args: object, **kwargs: object) -> object:
        if switch.on:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    def probe() -> None:
        if switch.on:
            raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(store, "write", write)
    monkeypatch.setattr(store, "probe", probe)
    assert await audit_read(client, who) == 503
    bad = await answer(lambda: client.get("/api/v1/audit", headers={"authorization": "Bearer x"}))
    assert bad.status_code == 401  # not waited for: answered, and its record kept for later
    assert (await client.get("/healthz")).status_code == 503
    switch.on = False
    assert (await until_healthy(client)).status_code == 200
    assert audited.audit is not None
    audited.audit.flush()
    assert "auth.failure" in [r.entry.action for r in store.records()]


async def test_a_bug_in_the_writer_fails_requests_and_the_writer_goes_on(
    client: httpx.AsyncClient,
    audited: Runtime,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any exception in a writer cycle (here: the playback folder) answers 503, not a hang,
    and the next cycle works."""
    assert audited.audit is not None
    who = customer(audited, clock)
    folder = audited.audit.folder
    assert folder is not None
    switch = Switch()
    real = folder.due

    def due(now_ms: int, *, final: bool) -> object:
        if switch.on:
            raise RuntimeError("a bug")
        return real(now_ms, final=final)

    monkeypatch.setattr(folder, "due", due)
    audited.audit.tick_seconds = 0.0  # fold every cycle, so every cycle meets the bug
    assert await audit_read(client, who) == 503
    switch.on = False
    assert (await until_healthy(client)).status_code == 200
    assert await audit_read(client, who) == 200


def test_a_stalled_writer_answers_503_after_a_bounded_wait(
    audited: Runtime, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer stuck in the store (a lock never granted) makes waiters fail with Unavailable
    after the log's bounded wait, and the log reports itself unhealthy until it moves again."""
    audit = audited.audit
    assert audit is not None
    audit.wait_seconds = 0.2
    release = threading.Event()
    real = audited.audit_store.exclusive

    @contextlib.contextmanager
    def stuck() -> Iterator[None]:
        release.wait(ANSWER_WITHIN)
        with real():
            yield

    monkeypatch.setattr(audited.audit_store, "exclusive", stuck)
    event = AccessEvent(Action.AUDIT_READ, Actor(partner_id="p"), 200, at_ms=1)
    with pytest.raises(Unavailable):
        audit.commit(event)
    assert not audit.healthy
    release.set()
    audit.commit(event)
    assert audit.healthy


def test_records_kept_through_an_outage_are_written_in_order(
    audited: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records nobody waits for, queued across failed cycles and back-offs, are all written
    once the store works again, in the order they were recorded."""
    audit = audited.audit
    assert audit is not None
    store = audited.audit_store
    real = store.write
    failures: list[int] = []

    def write(*args: object, **kwargs: object) -> object:
        if len(failures) < 4:  # the first four tries fail, whatever they carry
            failures.append(1)
            raise OSError(errno.EIO, "I/O error")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "write", write)
    for i in range(40):
        event = AccessEvent(Action.SESSION_READ, Actor(partner_id="p"), 200, i, detail={"i": i})
        audit.record(event)
        if i % 8 == 7:
            time.sleep(0.03)  # spread them over cycles and back-offs
    deadline = time.monotonic() + ANSWER_WITHIN
    while (len(failures) < 4 or not audit.healthy) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the writer's own retry has succeeded
    audit.flush()
    written = [r.entry.detail for r in store.records() if r.entry.action == "session.read"]
    assert written == [{"i": i} for i in range(40)]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_thread_that_died_is_started_again(
    audited: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even what no cycle catches (SystemExit ends the thread) leaves no request hanging: the
    waiter gets Unavailable within the bounded wait, and the next request starts a new
    writer that writes it."""
    audit = audited.audit
    assert audit is not None
    audit.wait_seconds = 0.3
    event = AccessEvent(Action.AUDIT_READ, Actor(partner_id="p"), 200, at_ms=1)
    audit.commit(event)  # the writer runs
    real = audited.audit_store.exclusive
    deaths: list[int] = []

    def exclusive() -> contextlib.AbstractContextManager[None]:
        if not deaths:
            deaths.append(1)
            raise SystemExit  # not an Exception: the thread ends
        return real()

    monkeypatch.setattr(audited.audit_store, "exclusive", exclusive)
    pool = concurrent.futures.ThreadPoolExecutor(2)  # a hung commit must not hang the test
    try:
        with pytest.raises(Unavailable):
            pool.submit(audit.commit, event).result(ANSWER_WITHIN)
        assert deaths
        pool.submit(audit.commit, event).result(ANSWER_WITHIN)
    finally:
        pool.shutdown(wait=False)
    assert [r.entry.action for r in integrated_records(audited)].count("audit.read") == 2
