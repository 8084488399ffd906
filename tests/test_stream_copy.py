"""Live streams copied to the object store while they go on (``ingest/streamcopy.py``), in
process: the copy is the acknowledged prefix, made at the interval and not per ack, on a local
store, a bucket and S3 (moto); a store outage delays ``stored`` but never ``bytes``, shows in
/healthz and the metrics, and is over by itself; a recovered stream is finalized by its spool's
node while it may come back, then by any node from the store's copy."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from tapevault.config import Settings
from tapevault.core.access import MemoryAccessLog
from tapevault.core.clock import FixedClock
from tapevault.core.model import Job, JobKind, Recording, RecordingStatus
from tapevault.core.ports import ObjectStore
from tapevault.core.sources import stream_key
from tapevault.core.streamparts import (
    Part,
    drop_stream_parts,
    part_key,
    recording_of_part,
    stored_bytes,
    stored_parts,
)
from tapevault.db.schema import recordings
from tapevault.http.app import build_app
from tapevault.http.health import STREAM_COPIES_FAILING, Health
from tapevault.ingest import formats, streamcopy
from tapevault.ingest.durable import AckSink, DurableStream, GroupCommitter
from tapevault.ingest.finalize import Finalizer
from tapevault.ingest.recovery import recover_streams
from tapevault.ingest.scratch import ORPHAN_SECONDS, sweep_unrecorded
from tapevault.ingest.streamcopy import StreamCopier
from tapevault.ingest.worker import Worker
from tapevault.runtime import Runtime, build_vault, open_runtime
from tapevault.storage import open_store
from tapevault.storage.node_local import NodeLocalDisk, read_node_id
from tests.objectstores import S3Server
from tests.support import BucketStore, live_recording, until

FRAME = 640


class Acks(AckSink):
    """Records every ack and every store-durable count reported."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.stored: int = 0
        self.copies: list[int] = []

    def ack(self, upto: int) -> None:
        self.acked.append(upto)

    def copied(self, stored: int) -> None:
        assert stored <= (self.acked[-1] if self.acked else 0), "never more than was acked"
        self.stored = stored
        self.copies.append(stored)


def recovered(copier: StreamCopier) -> bool:
    """Whether the copier no longer reports a failure (read fresh, not narrowed)."""
    return copier.failing_since is None


def chain_bytes(store: ObjectStore, recording_id: str) -> bytes:
    """What the store holds of a stream: its parts' bytes, in order (read back from the store)."""
    out = bytearray()
    for part in stored_parts(store, recording_id):
        with store.local_copy(part.key) as path:
            out += path.read_bytes()
    return bytes(out)


StoreFactory = Callable[[Path], ObjectStore]


def _local(tmp: Path) -> ObjectStore:
    return open_store((tmp / "audio").as_uri())


def _bucket(tmp: Path) -> ObjectStore:
    return BucketStore()


@pytest.fixture(params=["local", "bucket", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        request.getfixturevalue("s3_store_env")
        return open_store(s3.new_store_url(), scratch=tmp_path / "scratch")
    factory: StoreFactory = _local if request.param == "local" else _bucket
    return factory(tmp_path)


async def stream_into(
    tmp_path: Path, store: ObjectStore, interval: float, payload: bytes, pace: float = 0.0
) -> tuple[Acks, StreamCopier, DurableStream]:
    """Stream ``payload`` through a real group commit with a copier at ``interval``, frame by
    frame (``pace`` seconds apart), and wait until every byte is acknowledged."""
    local = NodeLocalDisk(tmp_path / "node", store, "test-owner")
    committer = GroupCommitter(local.streams_dir, interval=0.01)
    copier = StreamCopier(local.promote_range, interval)
    acks = Acks()
    spool = local.stream_spool("rec1")
    stream = committer.open(spool, acks)
    copier.watch(stream, "rec1", spool)
    for i in range(0, len(payload), FRAME):
        stream.append(payload[i : i + FRAME])
        committer.dirty()
        await asyncio.sleep(pace)
    await committer.finish(stream)
    assert acks.acked[-1] == len(payload)
    return acks, copier, stream


async def test_the_copy_is_the_acknowledged_prefix_in_parts(
    tmp_path: Path, store: ObjectStore
) -> None:
    """Parts chain from offset 0, hold exactly the stream's bytes, and every count reported as
    stored is what the store's chain held then; one part per interval, not one per ack."""
    payload = random.randbytes(FRAME * 150)
    acks, copier, stream = await stream_into(tmp_path, store, 0.3, payload, pace=0.005)
    await until(lambda: stream.stored == len(payload), what="the whole stream in the store")
    await copier.release(stream)
    parts = stored_parts(store, "rec1")
    assert stored_bytes(parts) == len(payload) and chain_bytes(store, "rec1") == payload
    assert [p.offset for p in parts] == [0, *(p.end for p in parts[:-1])]
    # Every reported count is a part boundary: reported only once that part was whole.
    assert set(acks.copies) <= {p.end for p in parts}
    assert acks.copies == sorted(acks.copies)
    assert len(parts) < len(acks.acked) / 3, (len(parts), len(acks.acked))
    copier.close()


async def test_no_copy_before_the_interval_and_none_with_interval_zero(
    tmp_path: Path,
) -> None:
    """With a long interval nothing is copied while the stream lives (the acks say stored 0);
    with 0 the copier is off altogether (the close stores the whole stream)."""
    store = BucketStore()
    payload = random.randbytes(FRAME * 30)
    acks, copier, _ = await stream_into(tmp_path / "long", store, 3600, payload)
    await asyncio.sleep(0.2)
    assert acks.copies == [] and store.puts == [] and copier.behind() == len(payload)
    copier.close()
    off = StreamCopier(lambda *_: pytest.fail("copied with interval 0"), 0)
    assert not off.enabled
    acks, _, _ = await stream_into(tmp_path / "off", store, 0, payload)
    assert acks.copies == [] and store.puts == []


async def test_a_store_outage_delays_stored_not_bytes_and_recovers(tmp_path: Path) -> None:
    """Puts failing: acks go on for every byte, ``stored`` stays, the failures are counted and
    /healthz says degraded (200) with the bytes behind; once the store answers, the copy
    catches up by itself and /healthz is ok again."""
    store = BucketStore()
    store.fail_puts = True
    failures: list[int] = []
    behind: list[int] = []
    local = NodeLocalDisk(tmp_path / "node", store, "test-owner")
    committer = GroupCommitter(local.streams_dir, interval=0.01)
    copier = StreamCopier(
        local.promote_range, 0.05, on_failure=lambda: failures.append(1), on_behind=behind.append
    )
    acks = Acks()
    spool = local.stream_spool("rec1")
    stream = committer.open(spool, acks)
    copier.watch(stream, "rec1", spool)
    payload = random.randbytes(FRAME * 40)
    for i in range(0, len(payload), FRAME):
        stream.append(payload[i : i + FRAME])
        committer.dirty()
        await asyncio.sleep(0.005)
    await until(lambda: stream.synced == len(payload), what="every byte acknowledged")
    await until(lambda: len(failures) >= 2, what="the copy retried")
    assert stream.stored == 0 and acks.copies == [] and copier.failing_since is not None
    await until(lambda: behind[-1] == len(payload), what="the gauge at the bytes behind")

    health = Health(MemoryAccessLog(), lambda: copier.failing_since)
    app = httpx.ASGITransport(app=health)
    async with httpx.AsyncClient(transport=app, base_url="http://t") as client:
        degraded = await client.get("/healthz")
        assert degraded.status_code == 200
        body = degraded.json()
        assert body["status"] == "degraded" and body["reason"] == STREAM_COPIES_FAILING
        assert body["streams"] == {"copy_failing_since": int(copier.failing_since or 0)}
        assert copier.behind() == len(payload)  # the figure the metric shows

        store.fail_puts = False
        await until(lambda: stream.stored == len(payload), what="the copy caught up")
        assert recovered(copier)
        await until(lambda: behind[-1] == 0, what="the gauge back at 0 (updated each second)")
        assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert chain_bytes(store, "rec1") == payload
    await committer.finish(stream)
    await copier.release(stream)
    copier.close()


async def test_release_waits_for_a_copy_in_flight(tmp_path: Path) -> None:
    """A stream that ends while its part is being put: ``release`` returns only once that put
    is over, so no part lands after the recording was finalized (and its parts removed)."""
    store = BucketStore()
    started, proceed = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    local = NodeLocalDisk(tmp_path / "node", store, "test-owner")

    def slow_copy(path: Path, key: str, offset: int, length: int):  # type: ignore[no-untyped-def]
        loop.call_soon_threadsafe(started.set)
        asyncio.run_coroutine_threadsafe(proceed.wait(), loop).result(10)
        return local.promote_range(path, key, offset, length)

    committer = GroupCommitter(local.streams_dir, interval=0.01)
    copier = StreamCopier(slow_copy, 0.01)
    acks = Acks()
    spool = local.stream_spool("rec1")
    stream = committer.open(spool, acks)
    copier.watch(stream, "rec1", spool)
    stream.append(b"\x01" * FRAME)
    committer.dirty()
    await asyncio.wait_for(started.wait(), 10)
    await committer.finish(stream)
    releasing = asyncio.ensure_future(copier.release(stream))
    await asyncio.sleep(0.05)
    assert not releasing.done()
    proceed.set()
    await asyncio.wait_for(releasing, 10)
    assert store.puts == [part_key("rec1", 0)] and acks.copies == [FRAME]
    copier.close()


def test_part_keys_and_their_recordings() -> None:
    """Keys name the stream and the offset (sorted as the stream); only such keys are parts."""
    assert part_key("01ABC", 640) == "streams/01ABC/0000000000000640.raw"
    assert recording_of_part(part_key("01ABC", 0)) == "01ABC"
    for other in ("streams/01ABC", "streams//0.raw", "streams/x/abc.raw", "incoming/x.raw"):
        assert recording_of_part(other) is None
    assert stored_bytes([]) == 0 and stored_bytes([Part("k", 0, 5), Part("k2", 5, 3)]) == 8


def test_a_gap_ends_the_chain_and_dropping_removes_it(tmp_path: Path) -> None:
    """The chain is what is contiguous from 0 (a part beyond a gap is not stored audio);
    dropping removes the chain, last part first."""
    store = BucketStore()
    for offset, size in ((0, 10), (10, 5), (20, 5)):
        store.put(part_key("r", offset), [b"x" * size])
    assert stored_bytes(stored_parts(store, "r")) == 15
    assert drop_stream_parts(store, "r") == 2
    assert store.puts[-1] == part_key("r", 20) and list(store.objects) == [part_key("r", 20)]


def test_the_node_id_is_kept_and_shared(tmp_path: Path) -> None:
    """One id per data directory, the same for every process and restart; a new disk gets a
    new one; a damaged file is refused at start."""
    first = read_node_id(tmp_path)
    assert read_node_id(tmp_path) == first
    assert NodeLocalDisk(tmp_path, BucketStore(), "another-process").node_id == first
    other = tmp_path / "other"
    other.mkdir()
    assert read_node_id(other) != first
    (other / "node-id").write_text("../../etc\n")
    with pytest.raises(Exception, match="node name"):
        read_node_id(other)


# --- recovery: whose job, and from what ------------------------------------------------------


def node_b(runtime: Runtime, tmp_path: Path, clock: FixedClock) -> Worker:
    """A worker of another node: same database and store, a data directory of its own."""
    local = NodeLocalDisk(tmp_path / "node-b", runtime.vault.store, "node-b-owner")
    vault = build_vault(runtime.repo, runtime.vault.store, clock, "https://vault.test", local)
    return Worker(Finalizer(vault, runtime.repo, formats.decoder(3600), local), "node-b-owner")


def test_a_job_reserved_for_a_node_is_leased_by_it_or_after_the_wait(runtime: Runtime) -> None:
    """Only the named node may lease a reserved job before ``node_until_ms``; any node after."""
    recording = live_recording(runtime, "writer")
    now = 1_000_000
    job = Job("j1", JobKind.FINALIZE, recording.recording_id, 0, now, None, None, None, now, None)
    runtime.repo.add_job(job)
    runtime.repo.add_job(replace(job, job_id="j2", node="node-a", node_until_ms=now + 1000))
    assert runtime.repo.lease_job("w", now, 60_000, "node-b").job_id == "j1"  # type: ignore[union-attr]
    assert runtime.repo.lease_job("w", now, 60_000, "node-b") is None
    assert runtime.repo.lease_job("w", now, 60_000) is None
    assert runtime.repo.lease_job("w", now + 1000, 60_000, "node-b").job_id == "j2"  # type: ignore[union-attr]
    runtime.repo.add_job(replace(job, job_id="j3", node="node-a", node_until_ms=now + 1000))
    assert runtime.repo.lease_job("w", now, 60_000, "node-a").job_id == "j3"  # type: ignore[union-attr]


def test_a_recovered_stream_waits_for_its_node_then_is_finalized_from_the_store(
    runtime: Runtime, tmp_path: Path, clock: FixedClock
) -> None:
    """Node A's writer is gone; node B takes the stream over, but its job is node A's while A
    may come back (B does not take it), then B finalizes it from the parts copied while it was
    live: exactly the store-durable bytes, not the acknowledged ones A's lost disk held."""
    recording = live_recording(runtime, "node-a:1:1")
    assert recording.spool_node == runtime.local.node_id
    acked = random.randbytes(FRAME * 30)
    stored = FRAME * 20
    spool = runtime.local.stream_spool(recording.recording_id)
    spool.write_bytes(acked)
    runtime.local.promote_range(spool, part_key(recording.recording_id, 0), 0, FRAME * 12)
    runtime.local.promote_range(
        spool, part_key(recording.recording_id, FRAME * 12), FRAME * 12, stored - FRAME * 12
    )
    spool.unlink()  # node A's disk is gone
    b = node_b(runtime, tmp_path, clock)
    with runtime.engine.begin() as conn:  # node A stopped renewing its lease long ago
        conn.execute(update(recordings).values(heartbeat_ms=0))
    assert recover_streams(b.finalizer.vault.ingest, "node-b-owner", spool_wait_seconds=600) == 1
    (job,) = runtime.repo.pending_jobs(recording.recording_id)
    assert job.node == runtime.local.node_id and job.node_until_ms is not None
    assert b.run_until_idle() == 0  # node A's job while it may come back
    clock.advance(601)
    assert b.run_until_idle() == 1
    done = runtime.repo.get_recording(recording.recording_id)
    assert done is not None and done.status is RecordingStatus.AVAILABLE and done.recovered
    with runtime.vault.store.local_copy(done.storage_key) as wav:
        assert wav.read_bytes()[44:] == acked[:stored]
    assert stored_parts(runtime.vault.store, recording.recording_id) == []  # cleaned up
    assert runtime.vault.store.stat(stream_key(recording.recording_id)) is None


def test_the_spool_node_finalizes_every_acknowledged_byte(
    runtime: Runtime, tmp_path: Path, clock: FixedClock
) -> None:
    """The same stream, node A back within the wait (its disk intact): A's worker takes the
    job at once and finalizes from its spool, acknowledged bytes beyond the store's copy
    included; the copy's parts are removed."""
    recording = live_recording(runtime, "node-a:1:1")
    acked = random.randbytes(FRAME * 30)
    spool = runtime.local.stream_spool(recording.recording_id)
    spool.write_bytes(acked)
    runtime.local.promote_range(spool, part_key(recording.recording_id, 0), 0, FRAME * 10)
    b = node_b(runtime, tmp_path, clock)
    with runtime.engine.begin() as conn:
        conn.execute(update(recordings).values(heartbeat_ms=0))
    assert recover_streams(b.finalizer.vault.ingest, "node-b-owner", spool_wait_seconds=600) == 1
    assert b.run_until_idle() == 0
    assert runtime.worker.run_until_idle() == 1  # node A
    done = runtime.repo.get_recording(recording.recording_id)
    assert done is not None and done.status is RecordingStatus.AVAILABLE
    with runtime.vault.store.local_copy(done.storage_key) as wav:
        assert wav.read_bytes()[44:] == acked
    assert stored_parts(runtime.vault.store, recording.recording_id) == []


def test_the_sweep_removes_parts_of_finished_recordings_only(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Parts of a recording still receiving stay; those of one finished or never recorded go
    once they are old enough (a crash between a copy and the cleanup)."""
    store = BucketStore()
    live = live_recording(runtime, "w")
    for rid in (live.recording_id, "01UNKNOWNRECORDING0000000000"):
        for offset in (0, 10, 20):
            store.put(part_key(rid, offset), [b"x" * 10])
            store.age(part_key(rid, offset), ORPHAN_SECONDS + 1)
    asked: list[str] = []

    def recording_of(recording_id: str) -> Recording | None:
        asked.append(recording_id)
        return runtime.repo.get_recording(recording_id)

    assert sweep_unrecorded(store, recording_of) == 3  # type: ignore[arg-type]
    assert sorted(store.objects) == [part_key(live.recording_id, o) for o in (0, 10, 20)]
    assert len(asked) == 2  # once a recording, not once a part


async def test_settings_and_health_of_a_runtime(settings: Settings, tmp_path: Path) -> None:
    """``TAPEVAULT_STREAM_UPLOAD_INTERVAL`` reaches the hub's copier, except on a store on the
    node's own disk (the default local store), where a copy would survive nothing the spool
    does not; the app's /healthz answers ok while nothing fails."""
    with_interval = Settings.load(
        {"data_dir": str(settings.data_dir), "database_url": settings.database_url},
        env={"TAPEVAULT_STREAM_UPLOAD_INTERVAL": "7s", "TAPEVAULT_STREAM_NODE_WAIT": "0"},
    )
    assert with_interval.stream_upload_interval_seconds == 7
    assert with_interval.stream_node_wait_seconds == 0
    assert with_interval.environment()["TAPEVAULT_STREAM_UPLOAD_INTERVAL"] == "7"
    rt = open_runtime(with_interval, access_log=MemoryAccessLog())
    on_bucket = open_runtime(with_interval, access_log=MemoryAccessLog(), store=BucketStore())
    try:
        assert rt.local.store_on_this_disk() and not on_bucket.local.store_on_this_disk()
        assert rt.streams.hub.copier().interval == 0
        assert on_bucket.streams.hub.copier().interval == 7
        assert rt.worker.spool_wait_seconds == 0
        transport = httpx.ASGITransport(app=build_app(rt.context, rt.streams))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
    finally:
        rt.close()
        on_bucket.close()
    assert os.environ.get("TAPEVAULT_STREAM_UPLOAD_INTERVAL") is None


async def test_one_stream_failing_for_good_is_reported_once_and_stays_visible(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream whose copies fail every time (its spool gone) while another's succeed: the
    copier reports failing from the first failure on (not reset by the other stream's
    successes), logs it once, and retries at most once per interval; released, it is clear."""
    store = BucketStore()
    local = NodeLocalDisk(tmp_path / "node", store, "test-owner")
    committer = GroupCommitter(local.streams_dir, interval=0.01)
    copier = StreamCopier(local.promote_range, 0.05)
    good, bad = Acks(), Acks()
    good_stream = committer.open(local.stream_spool("good"), good)
    bad_stream = committer.open(local.stream_spool("bad"), bad)
    copier.watch(good_stream, "good", local.stream_spool("good"))
    copier.watch(bad_stream, "bad", tmp_path / "nowhere.raw")  # every copy of it fails
    for _ in range(20):
        for stream in (good_stream, bad_stream):
            stream.append(b"\x02" * FRAME)
        committer.dirty()
        await asyncio.sleep(0.01)
    await until(lambda: good_stream.stored == FRAME * 20, what="the good stream copied")
    await asyncio.sleep(0.3)  # several of the bad stream's retries, and the good one's copies
    assert copier.failing_since is not None and bad_stream.stored == 0
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    for stream in (good_stream, bad_stream):
        await committer.finish(stream)
        await copier.release(stream)
    assert recovered(copier)
    copier.close()


async def test_a_stream_far_behind_catches_up_in_bounded_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an outage a stream is far behind: it is copied in parts of at most ``MAX_PART``
    (one PUT each, so bounded memory), one right after the other rather than an interval
    apart, and the chain is the stream."""
    monkeypatch.setattr(streamcopy, "MAX_PART", FRAME * 4)
    store = BucketStore()
    store.fail_puts = True
    local = NodeLocalDisk(tmp_path / "node", store, "test-owner")
    committer = GroupCommitter(local.streams_dir, interval=0.01)
    copier = StreamCopier(local.promote_range, 0.05)  # the first copy soon
    acks = Acks()
    spool = local.stream_spool("rec1")
    stream = committer.open(spool, acks)
    copier.watch(stream, "rec1", spool)
    payload = random.randbytes(FRAME * 40)
    stream.append(payload)
    committer.dirty()
    await until(lambda: stream.synced == len(payload), what="every byte acknowledged")
    await until(lambda: copier.failing_since is not None, what="the first copy failing")
    copier.interval = 5.0  # from now on: 10 parts an interval apart would take 45 s
    store.fail_puts = False
    await until(lambda: stream.stored == len(payload), within=20, what="caught up")
    parts = stored_parts(store, "rec1")
    assert len(parts) == 10 and all(p.size == FRAME * 4 for p in parts)
    assert chain_bytes(store, "rec1") == payload
    await committer.finish(stream)
    await copier.release(stream)
    copier.close()
