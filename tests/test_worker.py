"""The job pipeline: leases, retries with backoff, final failure, dead workers' jobs."""

from __future__ import annotations

import itertools
import logging
import socket
from pathlib import Path

import pytest
from sqlalchemy import update

from tapevault.audio_gen import tone_wav_bytes
from tapevault.core import lifecycle
from tapevault.core.clock import FixedClock
from tapevault.core.model import RecordingStatus, SessionKind, Tenant
from tapevault.core.sources import upload_key
from tapevault.db.schema import jobs
from tapevault.errors import Unavailable
from tapevault.ingest.finalize import Finalizer, Finished
from tapevault.ingest.worker import Worker
from tapevault.runtime import Runtime
from tests.support import wait_for


@pytest.fixture
def partner(runtime: Runtime) -> Tenant:
    return runtime.vault.tenants.create("clinic", 86400).tenant


def accept(runtime: Runtime, partner: Tenant, tmp_path: Path) -> str:
    session = runtime.vault.sessions.create_session(partner, SessionKind.AMBIENT)
    spooled = tmp_path / "upload.part"
    spooled.write_bytes(tone_wav_bytes(0.5))
    return runtime.vault.ingest.accept_upload(
        partner, session.session_id, spooled, "wav/pcm_s16le"
    ).recording_id


def test_exactly_one_worker_leases_a_job(
    runtime: Runtime, partner: Tenant, tmp_path: Path, clock: FixedClock
) -> None:
    """Two workers racing for one job: one gets it, the other gets nothing until it lapses."""
    accept(runtime, partner, tmp_path)
    repo = runtime.repo
    now = int(clock.now() * 1000)
    first = repo.lease_job("a", now, 60_000)
    assert first is not None and first.attempts == 1
    assert repo.lease_job("b", now, 60_000) is None
    # A minute passes on the database's clock, the one leases are judged by (a worker's own
    # clock, however far ahead, takes nothing): the lease is moved back instead of waiting.
    assert repo.lease_job("b", now + 3_600_000, 60_000) is None
    with repo.engine.begin() as conn:
        conn.execute(update(jobs).values(lease_expires_ms=jobs.c.lease_expires_ms - 60_001))
    lapsed = repo.lease_job("b", now, 60_000)
    assert lapsed is not None and lapsed.job_id == first.job_id and lapsed.attempts == 2


def test_transient_failures_retry_with_backoff_then_fail(
    runtime: Runtime, partner: Tenant, tmp_path: Path, clock: FixedClock
) -> None:
    """A decoder that keeps crashing is retried 2, 4, 8... s later, then the recording fails."""
    recording_id = accept(runtime, partner, tmp_path)
    calls: list[float] = []

    def broken(src: Path, dst: Path) -> Finished:
        calls.append(clock.now())
        raise RuntimeError("disk hiccup")

    worker = Worker(Finalizer(runtime.vault, runtime.repo, broken, runtime.local), "test-worker")
    for attempt in range(1, lifecycle.MAX_ATTEMPTS + 1):
        assert worker.run_once() is True
        recording = runtime.repo.get_recording(recording_id)
        assert recording is not None
        if attempt < lifecycle.MAX_ATTEMPTS:
            assert recording.status is RecordingStatus.PROCESSING
            assert worker.run_once() is False  # not due yet: backoff
            clock.advance(lifecycle.retry_delay_seconds(attempt))
    assert recording.status is RecordingStatus.FAILED
    assert "gave up after 5 attempts" in (recording.failure_reason or "")
    assert [round(b - a) for a, b in itertools.pairwise(calls)] == [2, 4, 8, 16]
    # An operational failure never deletes the acknowledged upload: it can be queued again.
    assert runtime.vault.store.stat(upload_key(recording_id)) is not None


def test_jobs_of_a_dead_local_process_are_reclaimed(
    runtime: Runtime, partner: Tenant, tmp_path: Path, clock: FixedClock
) -> None:
    """A job leased by a process of this host that no longer runs is freed at start-up."""
    recording_id = accept(runtime, partner, tmp_path)
    repo = runtime.repo
    dead = f"{socket.gethostname()}:999999999:deadbeef"
    assert repo.lease_job(dead, int(clock.now() * 1000), 600_000) is not None
    assert runtime.worker.run_once() is False  # still leased
    assert runtime.worker.reclaim_dead_local_leases() == 1
    assert runtime.worker.run_once() is True
    recording = repo.get_recording(recording_id)
    assert recording is not None and recording.status is RecordingStatus.AVAILABLE


def test_processing_recording_answers_404_with_retry_after(
    runtime: Runtime, partner: Tenant, tmp_path: Path
) -> None:
    """While the only recording is processing, the URL call is the seed's 404, retryable: the
    core names the subject, the dialects word it."""
    from tapevault.errors import NotReady, Subject
    from tapevault.http.wording import say

    recording_id = accept(runtime, partner, tmp_path)
    session_id = runtime.repo.get_recording(recording_id).session_id  # type: ignore[union-attr]
    with pytest.raises(NotReady) as info:
        runtime.vault.links.recording_links(partner, session_id, False)
    assert info.value.retry_after and info.value.subject is Subject.RECORDING
    assert say(info.value) == "Recording not found or decryption in progress."
    runtime.worker.run_until_idle()
    assert len(runtime.vault.links.recording_links(partner, session_id, False)) == 1


def test_key_removed_by_another_process_revokes_its_urls(
    runtime: Runtime, partner: Tenant, tmp_path: Path, settings: object, clock: FixedClock
) -> None:
    """`tapevault keys rotate/remove` in another process reaches a running server: the removed
    key's URLs fail and new URLs use the new key."""
    from urllib.parse import parse_qsl, urlsplit

    from tapevault.errors import UrlRejected
    from tapevault.runtime import open_runtime

    recording_id = accept(runtime, partner, tmp_path)
    runtime.worker.run_until_idle()
    session_id = runtime.repo.get_recording(recording_id).session_id  # type: ignore[union-attr]
    link = runtime.vault.links.recording_links(partner, session_id, False)[0]
    query = dict(parse_qsl(urlsplit(link.url).query))
    assert runtime.vault.media.authorize_media(recording_id, query).recording.recording_id

    other = open_runtime(runtime.settings, clock=clock)  # e.g. the `tapevault keys` CLI
    try:
        other.vault.keys.rotate_signing_key()
        assert other.vault.keys.remove_signing_key(query["k"])
    finally:
        other.close()
    runtime.vault.keys.reload_seconds = 0  # instead of waiting out the reload period
    with pytest.raises(UrlRejected):
        runtime.vault.media.authorize_media(recording_id, query)
    fresh = runtime.vault.links.recording_links(partner, session_id, False)[0]
    assert dict(parse_qsl(urlsplit(fresh.url).query))["k"] != query["k"]


def test_a_database_outage_is_one_line_a_round_not_a_traceback(
    runtime: Runtime, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the database is unreachable the worker says so in one line per round (it retries
    every poll, so a traceback each time filled the log: ~40 lines a second per thread)."""
    worker = Worker(runtime.worker.finalizer, "test-worker", poll_seconds=0.01)

    def down() -> bool:
        raise Unavailable("The database cannot be reached; try again shortly.")

    monkeypatch.setattr(worker, "run_once", down)
    caplog.set_level(logging.WARNING, logger="tapevault.worker")
    worker.start()
    try:
        wait_for(lambda: len(caplog.records) >= 2, what="two failed rounds logged")
    finally:
        worker.stop()
    assert all(r.exc_info is None for r in caplog.records)
    assert "database cannot be reached" in caplog.records[0].getMessage()
