"""No token, key, secret or signature in any log line or access record of the test run.

The registry and the scanner are ``tests/leaks.py``; ``conftest.leak_watch`` feeds the registry
and gathers the sources for the whole session, and ``test_no_secret_in_any_log_or_access_record``
runs last (``conftest.pytest_collection_modifyitems``) and scans everything the run wrote. The
other tests here show that the scanner finds what it must, and that a leak through each kind of
source fails a run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tapevault.auth.suki import issue_token
from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.clock import FixedClock
from tapevault.ingest import tus_store
from tapevault.runtime import Runtime
from tests import leaks
from tests.server import Server

CANARY = "TAPEVAULT_TEST_LEAK_CANARY"
ROOT = Path(__file__).resolve().parent.parent


def test_the_scanner_finds_a_secret_however_it_is_quoted() -> None:
    """A registered secret is found bare, in a URL, in JSON, percent-encoded around it or
    inside a longer word; an id shorter than ``MIN_LENGTH`` and text without it are not."""
    registry = leaks.Secrets()
    signature = "Zm9vYmFyYmF6cXV4cXV1eA-_0123456789"
    registry.add(signature, "a signature")
    registry.add("tvk_" + "k" * 40, "an API key")
    registry.add("abc123", "too short to be told from an id")
    assert registry.count == 2
    for text in (
        signature,
        f"GET /media/r.wav?m=stream&e=1&s={signature}",
        f'{{"url": "https://v/x?s={signature}&k=1"}}',
        f"s%3D{signature}%26",
        f"Bearer tvk_{'k' * 40}",
    ):
        assert text in registry, text
    leaks_found = leaks.scan(registry, "here", f"line one\nthe url ?s={signature} was logged\n")
    assert [(leak.what, leak.source) for leak in leaks_found] == [("a signature", "here")]
    assert signature not in leaks_found[0].excerpt  # the report does not repeat the secret
    assert "abc123" not in registry
    assert f"{signature[:-3]}" not in registry
    assert "nothing to see here, 01J0000000000000000000000" not in registry


def test_harvest_registers_credentials_and_url_signatures_of_an_answer() -> None:
    """From a server's JSON answer: secret-named fields and the ``s=``/``ticket=`` of every
    URL, at any depth; ids and other values are not registered."""
    registry = leaks.Secrets()
    leaks.harvest(
        {
            "partner_id": "p" * 32,
            "jwt_secret": "j" * 43,
            "api_key": "tvk_" + "a" * 43,
            "recordings": [{"url": "https://v.test/media/r.wav?m=stream&e=9&k=k1&s=" + "s" * 43}],
            "stream": {"ticket": "t" * 32},
        },
        registry,
    )
    assert registry.count == 4
    assert "p" * 32 not in registry


def test_a_tus_upload_id_is_an_id_not_a_secret() -> None:
    """Upload ids are drawn like secrets but are ids (every tus request carries its token): the
    registry forgets them, and an id taken back does not hide a secret sharing its prefix."""
    upload_id = tus_store.new_upload_id()  # the module's, as the tus store calls it
    assert upload_id not in leaks.SECRETS
    registry = leaks.Secrets()
    registry.add("a" * 16 + "secret-tail", "a secret")
    registry.add("a" * 16 + "id-tail", "an id")
    registry.forget("a" * 16 + "id-tail")
    assert registry.count == 1 and "a" * 16 + "secret-tail" in registry


def test_the_final_check_runs_last(request: pytest.FixtureRequest) -> None:
    """The collection hook moved the secrets check behind every other test of the run."""
    names = [item.name for item in request.session.items]
    assert leaks.FINAL_TEST in names
    assert names[-1] == leaks.FINAL_TEST


if os.environ.get(CANARY) == "1":  # only inside test_a_leak_through_any_source_fails_the_run

    def test_leak_canary(audited: Runtime, clock: FixedClock, tmp_path: Path) -> None:
        """Leak one registered secret through each kind of source."""
        tenant = audited.vault.tenants.create("canary", 86400)
        token = issue_token(tenant.tenant, now=clock.now(), ttl_seconds=60)
        logging.getLogger("tapevault.http").warning("canary: a token in a log line %s", token)
        audited.context.access_log.commit(
            AccessEvent(
                action=Action.AUTH_FAILURE,
                actor=Actor(kind="api_key", user_agent=f"canary {tenant.api_key}"),
                status=401,
                at_ms=int(clock.now() * 1000),
            )
        )
        server = Server(tmp_path / "data")
        server.log_path.write_text(f"canary: {tenant.tenant.jwt_secret}\n")
        server.listener.close()


def test_a_leak_through_any_source_fails_the_run(tmp_path: Path) -> None:
    """A run whose test leaks a token into a log line, an API key into an access record (on
    SQLite and on PostgreSQL) and a tenant secret into a server's log fails at its secrets
    check, naming each source."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'run'}",
            f"{__file__}::test_leak_canary",
            f"{__file__}::{leaks.FINAL_TEST}",
        ],
        cwd=ROOT,
        env={**os.environ, CANARY: "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "2 passed" in out and "1 failed" in out, out
    assert "secret(s) found in the logs or access records of this run" in out, out
    for source in (
        "process.log",
        "data.server.log",
        "meta.db (access records)",
        "access records in postgresql",
    ):
        assert source in out, f"{source} not named:\n{out}"
    for what in ("<a JWT", "<a random secret"):
        assert what in out, out


def test_no_secret_in_any_log_or_access_record(leak_watch: leaks.Sources) -> None:
    """Every secret the run minted or was handed (tokens, API keys, tenant and link secrets,
    tickets, URL signatures) is absent from every log line (this process's, every real
    server's, the CLI's) and every access record (SQLite, PostgreSQL, in memory)."""
    time.sleep(0.2)  # request-log writer threads hand their last lines to the logger
    for handler in logging.getLogger().handlers:
        handler.flush()
    found: list[leaks.Leak] = []
    scanned = 0
    for source, text in leak_watch.texts():
        scanned += 1
        found += leaks.scan(leaks.SECRETS, source, text)
    assert not found, leaks.report(found, leaks.SECRETS, scanned)
    print(f"secrets check: {leaks.SECRETS.count} secrets, {scanned} sources, no leak")
