"""The change feed (db/changes.py) and the caches it invalidates, on SQLite and PostgreSQL: a
change made by any process is passed on, a PostgreSQL notification wakes the feed without its
poll, an outage is survived, a failed invalidation is tried again, and an entry read before an
invalidation is never cached after it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tapevault.auth.kore import KoreTokenVerifier, issue_kore_token
from tapevault.auth.suki import SukiTokenVerifier, issue_token
from tapevault.core.clock import FixedClock
from tapevault.core.model import SessionKind, Tenant
from tapevault.core.servingcache import ServingCache
from tapevault.db.changes import ChangeFeed
from tapevault.errors import AuthError, DatabaseUnavailable
from tapevault.runtime import Runtime
from tests import support
from tests.support import wait_for

# The longest a feed may take to say so, in these tests: far below a poll of a minute, so a
# change seen in time on PostgreSQL was its notification's doing.
SOON = 10.0


@pytest.fixture
def heard(runtime: Runtime, database_url: str) -> Iterator[tuple[ChangeFeed, list[int]]]:
    """A feed over the runtime's database that records each change it passes on; polling once
    a minute on PostgreSQL (only a notification can wake it in time), four times a second on
    SQLite (which has none)."""
    seen: list[int] = []
    poll = 60.0 if database_url.startswith("postgresql") else 0.25
    feed = ChangeFeed(
        runtime.repo.engine,
        runtime.repo.cache_epoch,
        lambda: seen.append(runtime.repo.cache_epoch()),
        poll_seconds=poll,
    )
    feed.start()
    try:
        yield feed, seen
    finally:
        feed.stop()


def test_every_write_that_changes_what_may_be_served_is_heard(
    runtime: Runtime, heard: tuple[ChangeFeed, list[int]], clock: FixedClock
) -> None:
    """A cache epoch bump (deletion, hold, retention), a tenant setting (a rotated secret) and
    a signing key added or removed: each reaches the feed."""
    _, seen = heard
    vault = runtime.vault
    tenant = vault.tenants.create("clinic", 86400).tenant
    session = vault.sessions.create_session(tenant, SessionKind.AMBIENT)
    writes = [
        lambda: vault.cache.set_session_retention(tenant.partner_id, session.session_id, 3600),
        lambda: vault.tenants.rotate_kore_secret(tenant),
        vault.keys.rotate_signing_key,
        lambda: vault.keys.remove_signing_key(vault.keys.signing_key_ids()[-1]),
    ]
    for count, write in enumerate(writes, start=1):
        write()
        wait_for(lambda n=count: len(seen) >= n or None, SOON, f"change {count} to be heard")  # type: ignore[misc]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


def test_a_failed_invalidation_is_tried_again(runtime: Runtime) -> None:
    """An ``on_change`` that raises leaves the change unseen: the next check passes it on."""
    calls: list[str] = []

    def flaky() -> None:
        calls.append("call")
        if len(calls) == 1:
            raise RuntimeError("a cache that could not be dropped")

    feed = ChangeFeed(runtime.repo.engine, runtime.repo.cache_epoch, flaky, poll_seconds=0.05)
    feed.epoch = runtime.repo.cache_epoch()
    runtime.repo.bump_cache_epoch()  # what the serving cache's writes do
    with pytest.raises(RuntimeError):
        feed.check()
    assert feed.check() is True and calls == ["call", "call"]
    assert feed.check() is False  # passed on once


def test_the_feed_survives_a_database_outage(
    runtime: Runtime, heard: tuple[ChangeFeed, list[int]], database_url: str
) -> None:
    """The database goes away (PostgreSQL terminates the listening backend) and comes back:
    a change made afterwards is heard all the same."""
    _, seen = heard
    with support.database_gone(runtime, database_url):
        threading.Event().wait(0.5)  # the feed meets the outage
    runtime.repo.bump_cache_epoch()  # what the serving cache's writes do
    wait_for(lambda: seen or None, SOON, "the change after the outage to be heard")


class MidRead:
    """A repository whose reads are overtaken by an invalidation: ``forget`` is called while
    the read is in flight, as the change feed would when a change commits meanwhile."""

    def __init__(self, repo: Any, forget: Any) -> None:
        self._repo = repo
        self.forget = forget
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    def _overtaken(self, result: Any) -> Any:
        self.reads += 1
        self.forget()
        return result

    def get_recording(self, recording_id: str) -> Any:
        return self._overtaken(self._repo.get_recording(recording_id))

    def get_session_with_recordings(self, partner_id: str, session_id: str) -> Any:
        return self._overtaken(self._repo.get_session_with_recordings(partner_id, session_id))

    def get_tenant(self, partner_id: str) -> Tenant | None:
        return self._overtaken(self._repo.get_tenant(partner_id))

    def get_tenant_by_kore_client(self, client_id: str) -> Tenant | None:
        return self._overtaken(self._repo.get_tenant_by_kore_client(client_id))


def test_a_recording_read_before_an_invalidation_is_not_cached(
    runtime: Runtime, clock: FixedClock, tmp_path: Any
) -> None:
    """Read, then invalidated, then cached would serve the old row for the cache's lifetime:
    each read overtaken by an invalidation reads again next time."""
    tenant = runtime.vault.tenants.create("clinic", 86400).tenant
    recording_id = support_recording(runtime, tenant, tmp_path)
    cache: ServingCache
    repo = MidRead(runtime.repo, lambda: cache.reload())  # what the change feed calls
    cache = ServingCache(repo)
    for _ in range(3):
        assert cache.servable_recording(recording_id) is not None
    assert repo.reads == 3
    recording = repo.get_recording(recording_id)
    assert recording is not None
    repo.forget = lambda: None  # no invalidation now: the next read is kept
    for _ in range(3):
        cache.settled_session(tenant.partner_id, recording.session_id)
    assert repo.reads == 4 + 1


def support_recording(runtime: Runtime, tenant: Tenant, tmp_path: Any) -> str:
    """One finished recording in an ended session (the worker run in process)."""
    from tapevault.audio_gen import tone_wav_bytes

    vault = runtime.vault
    session = vault.sessions.create_session(tenant, SessionKind.AMBIENT)
    spooled = tmp_path / "upload.part"
    spooled.write_bytes(tone_wav_bytes(0.5))
    recording = vault.ingest.accept_upload(tenant, session.session_id, spooled, "wav/pcm_s16le")
    vault.sessions.end_session(tenant, session.session_id)
    runtime.worker.run_until_idle()
    return recording.recording_id


def test_a_token_verified_before_an_invalidation_is_not_cached(
    runtime: Runtime, clock: FixedClock
) -> None:
    """A token verified with a secret read just before it was rotated is verified again on
    its next use, for Suki (partner and token caches) and Kore."""
    tenant = runtime.vault.tenants.create("clinic", 86400).tenant
    suki: SukiTokenVerifier
    repo = MidRead(runtime.repo, lambda: suki.forget())
    suki = SukiTokenVerifier(repo.get_tenant, clock)
    token = issue_token(tenant, now=clock.now(), ttl_seconds=3600)
    for _ in range(2):
        suki.verify(token)
    assert repo.reads == 2
    kore: KoreTokenVerifier
    repo = MidRead(runtime.repo, lambda: kore.forget())
    kore = KoreTokenVerifier(repo.get_tenant_by_kore_client, clock)
    kore_token = issue_kore_token(tenant, now=clock.now(), ttl_seconds=3600)
    for _ in range(2):
        kore.verify(kore_token)
    assert repo.reads == 2
    # And what the invalidation is for: a rotated secret fails at once.
    runtime.vault.tenants.rotate_kore_secret(tenant)
    kore.forget()
    with pytest.raises(AuthError):
        kore.verify(kore_token)


def test_a_feed_started_without_the_database_catches_up(runtime: Runtime) -> None:
    """A process that starts while the database is away serves on; once the feed reads the
    epoch, it passes one change on (its caches were filled without it)."""
    calls: list[int] = []
    up = threading.Event()

    def read_epoch() -> int:
        if not up.is_set():
            raise DatabaseUnavailable("The database cannot be reached; try again shortly.")
        return runtime.repo.cache_epoch()

    feed = ChangeFeed(runtime.repo.engine, read_epoch, lambda: calls.append(1), poll_seconds=0.05)
    feed.start()
    try:
        up.set()
        wait_for(lambda: calls or None, SOON, "the feed to catch up")
    finally:
        feed.stop()
