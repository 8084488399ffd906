"""Shared fixtures: a database of each kind, and a wired vault over it.

Tests that need PostgreSQL skip when it cannot be reached, unless ``TAPEVAULT_TEST_STRICT=1``
(which ``.ci/run`` sets): then an unreachable server fails the run instead of skipping it.
When a test fails, what any ``tests.server.Server`` wrote during it is attached to the report.
For the whole session ``leak_watch`` registers every secret the tests mint or are handed and
gathers every log line and access record, and the last test of the run
(``tests/test_secrets_in_logs.py``) checks that no secret appears in any of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import requests
from sqlalchemy import Engine, create_engine, text

import tapevault.core.signing
from tapevault.config import Settings
from tapevault.core.access import MemoryAccessLog
from tapevault.core.clock import FixedClock
from tapevault.ingest import tus_store
from tapevault.runtime import Runtime, open_runtime
from tests import leaks
from tests.dialects import asgi_client
from tests.objectstores import AZURITE, AzuriteServer, S3Server
from tests.receiver import Receiver
from tests.server import LOGS, log_marks, output_since

PG_ADMIN_URL = os.environ.get(
    "TAPEVAULT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
STRICT = os.environ.get("TAPEVAULT_TEST_STRICT") == "1"
START = 1_800_000_000.0
_SERVER_LOG_MARKS = pytest.StashKey[dict[Path, int]]()


def need(condition: bool, reason: str) -> None:
    """Skip when a system component is missing, or fail when the run is strict."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"{reason} (TAPEVAULT_TEST_STRICT=1 turns this skip into a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped afterwards."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # any connection failure means "not available here"
        admin.dispose()
        need(False, f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}")
    name = f"tapevault_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _reset_pg(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


# A test module that sets ``ON_OBJECT_STORE = True`` also runs each of its tests that build a
# runtime (the ``settings`` fixture) on PostgreSQL with audio in S3 (moto): id "postgresql-s3".
OBJECT_STORE_RUN = "postgresql-s3"


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Add the object-store run to the suites that ask for it. Done as a parametrize mark (read
    by pytest after this hook), which takes precedence over the fixture's own params."""
    if (
        getattr(metafunc.module, "ON_OBJECT_STORE", False)
        and "settings" in metafunc.fixturenames
        and "database_url" in metafunc.fixturenames
    ):
        metafunc.definition.add_marker(
            pytest.mark.parametrize(
                "database_url", ["sqlite", "postgresql", OBJECT_STORE_RUN], indirect=True
            )
        )


def _run_of(request: pytest.FixtureRequest) -> str | None:
    callspec = getattr(request.node, "callspec", None)
    return None if callspec is None else callspec.params.get("database_url")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that takes this runs once on SQLite and once on PostgreSQL (empty schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta.db'}"  # its access records are read at the end
        return
    url: str = request.getfixturevalue("pg_server_url")
    _reset_pg(url)
    yield url
    _keep_pg_access_records(url)  # before the next test's reset drops them


_PG_ENGINES: dict[str, Engine] = {}


def _keep_pg_access_records(url: str) -> None:
    """Copy the test's PostgreSQL access records for the end-of-run secrets check."""
    engine = _PG_ENGINES.get(url) or _PG_ENGINES.setdefault(url, create_engine(url))
    with engine.connect() as conn:

        def execute(sql: str) -> Any:
            return conn.execute(text(sql))

        rows = list(
            leaks.access_rows(
                execute, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        )
    engine.dispose()  # no idle connection may hold up the next reset
    if rows:
        leaks.keep(f"access records in {url}", "\n".join(rows))


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    """One webhook receiver process for the run (tests/receiver.py), each test on its own path."""
    started = Receiver().start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server, once per test run (skips, or fails when strict, without moto)."""
    try:
        server = S3Server.start()
    except Exception as exc:  # moto missing or unable to bind: "not available here"
        need(False, f"moto's S3 server cannot start: {type(exc).__name__}: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[AzuriteServer]:
    """Azurite (Azure Blob), once per test run; needs ``npm ci`` in tests/node."""
    need(AZURITE.exists(), f"Azurite is not installed at {AZURITE} (npm ci in tests/node)")
    try:
        server = AzuriteServer.start()
    except Exception as exc:
        need(False, f"Azurite cannot start: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_store_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's environment pointed at moto (the providers' standard variables)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server.env


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def access_log() -> Iterator[MemoryAccessLog]:
    log = MemoryAccessLog()
    yield log
    if log.events:  # for the end-of-run secrets check
        leaks.keep("in-memory access records", "\n".join(map(repr, log.events)))


@pytest.fixture
def storage_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The object store of this test's run (a fresh bucket in moto for ``postgresql-s3``, its
    credentials in the providers' variables), or None: the data directory's."""
    if _run_of(request) != OBJECT_STORE_RUN:
        return None
    s3: S3Server = request.getfixturevalue("s3_server")
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    return s3.new_store_url()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, storage_url: str | None) -> Settings:
    flags = {
        "data_dir": str(tmp_path / "data"),
        "database_url": database_url,
        "public_url": "https://vault.test",
        "max_upload_bytes": "8M",
    }
    if storage_url is not None:
        flags["storage_url"] = storage_url
    return Settings.load(flags, env={})


@pytest.fixture
def runtime(
    settings: Settings, clock: FixedClock, access_log: MemoryAccessLog
) -> Iterator[Runtime]:
    rt = open_runtime(settings, clock=clock, access_log=access_log)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def audited(settings: Settings, clock: FixedClock) -> Iterator[Runtime]:
    """A runtime with the real, durable access log (``runtime`` records into a list)."""
    rt = open_runtime(settings, clock=clock)
    assert rt.audit is not None
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process HTTP client of ``runtime`` (a module may override it for another runtime)."""
    async with asgi_client(runtime) as c:
        yield c


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many tests ran on each database, so CI output shows PostgreSQL was exercised."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            for backend in ("sqlite", "postgresql"):
                if f"[{backend}" in nodeid or f"-{backend}]" in nodeid or f"-{backend}-" in nodeid:
                    by_outcome = counts.setdefault(backend, {})
                    by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    for backend, by_outcome in sorted(counts.items()):
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(by_outcome.items()))
        terminalreporter.write_line(f"database {backend}: {summary}")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Note how far each real server's log reached before this test (and its fixtures) ran."""
    item.stash[_SERVER_LOG_MARKS] = log_marks()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, attach what real servers wrote during the test: their own account of it."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for title, text in output_since(item.stash.get(_SERVER_LOG_MARKS, {})):
            report.sections.append((title, text))


# --- the secrets registry and the logs it is checked against (tests/leaks.py) -------------------


@pytest.fixture(scope="session", autouse=True)
def leak_watch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[leaks.Sources]:
    """For the whole run: register every secret minted in this process or handed to the tests,
    and write this process's log (``tapevault`` at INFO, as a server logs) to a file."""
    base = tmp_path_factory.getbasetemp()
    sources = leaks.Sources(
        process_log=base / "process.log",
        kept=base / "kept-for-secrets-check.log",
        server_logs=LOGS,
        databases_under=[base],
    )
    leaks.KEPT = sources.kept
    handler = logging.FileHandler(sources.process_log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root, ours = logging.getLogger(), logging.getLogger("tapevault")
    level = ours.level
    root.addHandler(handler)
    ours.setLevel(logging.INFO)
    patch = pytest.MonkeyPatch()
    registry = leaks.SECRETS
    patch.setattr(jwt, "encode", _registering(jwt.encode, "a JWT"))
    patch.setattr(secrets, "token_urlsafe", _registering(secrets.token_urlsafe, "a random secret"))
    patch.setattr(
        tapevault.core.signing,
        "_mac",
        _registering(tapevault.core.signing._mac, "a signed URL's signature"),
    )
    patch.setattr(tus_store, "new_upload_id", _not_secret(tus_store.new_upload_id))
    for cls in (requests.Session, httpx.Client, httpx.AsyncClient):
        patch.setattr(cls, "send", _harvesting(cls.send, registry))
    try:
        yield sources
    finally:
        patch.undo()
        ours.setLevel(level)
        root.removeHandler(handler)
        handler.close()
        leaks.KEPT = None


def _registering(mint: Callable[..., Any], what: str) -> Callable[..., Any]:
    def minted(*args: Any, **kwargs: Any) -> Any:
        secret = mint(*args, **kwargs)
        leaks.SECRETS.add(secret, what)
        return secret

    return minted


def _not_secret(mint: Callable[[], str]) -> Callable[[], str]:
    """An id drawn with ``secrets.token_urlsafe`` that is no credential (see tests/leaks.py)."""

    def drawn() -> str:
        value = mint()
        leaks.SECRETS.forget(value)
        return value

    return drawn


def _harvesting(send: Callable[..., Any], registry: leaks.Secrets) -> Callable[..., Any]:
    """A client's ``send`` that registers the credentials in the JSON answers it receives (a
    real server's tokens, keys and signed URLs). Streamed answers are left unread."""

    def harvest(response: Any, streamed: bool) -> None:
        if streamed or not isinstance(response, requests.Response | httpx.Response):
            return
        if "json" not in response.headers.get("content-type", ""):
            return
        with contextlib.suppress(ValueError):  # not JSON after all: nothing to register
            leaks.harvest(response.json(), registry)

    if send is httpx.AsyncClient.send:

        async def send_async(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            response = await send(self, request, *args, **kwargs)
            harvest(response, bool(kwargs.get("stream")))
            return response

        return send_async

    def send_sync(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        response = send(self, request, *args, **kwargs)
        harvest(response, bool(kwargs.get("stream")))
        return response

    return send_sync


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The secrets check runs last: it reads what every other test logged."""
    final = [item for item in items if item.name == leaks.FINAL_TEST]
    if final:
        items[:] = [item for item in items if item.name != leaks.FINAL_TEST] + final
