"""Group commit: an acknowledgement never precedes its sync, and a failed sync acks nothing."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tapevault.ingest import durable
from tapevault.ingest.durable import GroupCommitter
from tests.support import until


async def test_acks_follow_syncs_and_batch_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes are acked only after a sync that started after they were written; one sync serves
    every open stream."""
    synced_sizes: list[list[int]] = []
    real_sync = durable.sync_filesystem

    def spy(fd: int) -> None:
        real_sync(fd)
        synced_sizes.append([os.fstat(s.fd).st_size for s in streams])

    monkeypatch.setattr(durable, "sync_filesystem", spy)
    committer = GroupCommitter(tmp_path, interval=0.01)
    acks: dict[int, list[int]] = {0: [], 1: []}

    def recorder(index: int):  # type: ignore[no-untyped-def]
        async def ack(upto: int, stored: int = 0) -> None:
            # The sync that preceded this ack saw at least `upto` bytes on disk.
            assert synced_sizes and synced_sizes[-1][index] >= upto
            acks[index].append(upto)

        return ack

    streams = [committer.open(tmp_path / f"s{i}.raw", recorder(i)) for i in range(2)]
    for _ in range(3):
        for stream in streams:
            stream.append(b"\x00" * 640)
        committer.dirty()
    for stream in streams:
        await committer.finish(stream)
    assert acks[0][-1] == acks[1][-1] == 1920
    assert committer.batches <= len(acks[0]) + len(acks[1])


async def test_failed_sync_is_never_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an fsync error the stream fails: no ack for those bytes, and no retry."""
    calls = 0

    def failing(fd: int) -> None:
        nonlocal calls
        calls += 1
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(durable, "sync_filesystem", failing)
    committer = GroupCommitter(tmp_path, interval=0.01)
    acked: list[int] = []

    async def ack(upto: int, stored: int = 0) -> None:
        acked.append(upto)

    stream = committer.open(tmp_path / "s.raw", ack)
    stream.append(b"\x01" * 640)
    committer.dirty()
    with pytest.raises(OSError):
        await committer.finish(stream)
    assert acked == []
    assert calls == 1
    with pytest.raises(OSError):
        stream.append(b"\x01" * 640)  # a failed stream takes no more audio


async def test_a_client_that_does_not_read_holds_up_no_one(tmp_path: Path) -> None:
    """One stream whose ack never completes does not stop syncs or acks of the others."""
    import asyncio

    committer = GroupCommitter(tmp_path, interval=0.01)
    stuck = asyncio.Event()

    async def never(upto: int, stored: int = 0) -> None:
        await stuck.wait()

    acked: list[int] = []

    async def ack(upto: int, stored: int = 0) -> None:
        acked.append(upto)

    slow = committer.open(tmp_path / "slow.raw", never)
    fast = committer.open(tmp_path / "fast.raw", ack)
    for _ in range(20):
        slow.append(b"\x00" * 64)
        fast.append(b"\x00" * 64)
        committer.dirty()
        await asyncio.sleep(0.005)
    await committer.finish(fast)
    assert fast.synced == 20 * 64 and acked[-1] == 20 * 64
    assert slow.synced == 20 * 64  # synced although its client never took an ack
    stuck.set()
    await committer.finish(slow)


async def test_the_loop_never_writes_and_a_backlog_is_drained(tmp_path: Path) -> None:
    """``append`` only buffers; a stream holding BACKLOG_BYTES waits in ``drain`` until a batch
    has handed them to the file."""
    committer = GroupCommitter(tmp_path, interval=0.01)
    stream = committer.open(tmp_path / "s.raw", _ignore)
    stream.append(b"\x00" * durable.BACKLOG_BYTES)
    assert os.fstat(stream.fd).st_size == 0 and stream.backlog == durable.BACKLOG_BYTES
    await committer.drain(stream)
    assert stream.backlog == 0 and os.fstat(stream.fd).st_size == durable.BACKLOG_BYTES
    await committer.finish(stream)
    assert stream.synced == durable.BACKLOG_BYTES


async def test_a_failed_write_fails_only_its_stream(tmp_path: Path) -> None:
    committer = GroupCommitter(tmp_path, interval=0.01)
    broken = committer.open(tmp_path / "broken.raw", _ignore)
    os.close(broken.fd)
    broken.fd = os.open(tmp_path / "broken.raw", os.O_RDONLY)  # every write fails (EBADF)
    failed: list[OSError] = []

    class Sink(durable.AckSink):
        def ack(self, upto: int) -> None:
            raise AssertionError("a failed write is never acknowledged")

        def fail(self, error: OSError) -> None:
            failed.append(error)

    broken.acks = Sink()
    healthy = committer.open(tmp_path / "healthy.raw", _ignore)
    broken.append(b"\x01" * 64)
    healthy.append(b"\x02" * 64)
    committer.dirty()
    with pytest.raises(OSError):
        await committer.finish(broken)
    await committer.finish(healthy)
    assert len(failed) == 1 and healthy.synced == 64
    assert (tmp_path / "healthy.raw").read_bytes() == b"\x02" * 64


async def test_a_stream_closed_during_its_batch_keeps_its_fd_until_the_batch_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committer's thread may be writing the fd: closing it then could let another file
    reuse the number, and the audio would land there."""
    import threading

    release = threading.Event()
    real_sync = durable.sync_filesystem

    def slow(fd: int) -> None:
        release.wait(10)
        real_sync(fd)

    monkeypatch.setattr(durable, "sync_filesystem", slow)
    committer = GroupCommitter(tmp_path, interval=0.01)
    stream = committer.open(tmp_path / "s.raw", _ignore)
    stream.append(b"\x00" * 640)
    committer.dirty()
    await until(lambda: stream._in_flight)
    stream.close()
    os.fstat(stream.fd)  # still open
    release.set()
    await until(lambda: not stream._in_flight)
    with pytest.raises(OSError):
        os.fstat(stream.fd)
    await committer.finish(stream)


async def _ignore(upto: int, stored: int = 0) -> None:
    pass


async def test_a_stream_taken_over_is_acknowledged_no_more(tmp_path: Path) -> None:
    """Once the ownership check no longer lists a stream, nothing more of it is acked, even
    bytes already on disk; it fails with StreamTakenOver. Streams still held go on."""

    held = {"kept", "lost"}
    checked: list[list[str]] = []

    def check(keys: Sequence[str]) -> set[str]:
        checked.append(sorted(keys))
        return set(held)

    committer = GroupCommitter(tmp_path, interval=0.01, held=check)
    acked: dict[str, list[int]] = {"kept": [], "lost": []}
    failed: list[OSError] = []

    class Sink(durable.AckSink):
        def __init__(self, key: str) -> None:
            self.key = key

        def ack(self, upto: int) -> None:
            acked[self.key].append(upto)

        def fail(self, error: OSError) -> None:
            failed.append(error)

    kept = committer.open(tmp_path / "kept.raw", Sink("kept"), key="kept")
    lost = committer.open(tmp_path / "lost.raw", Sink("lost"), key="lost")
    for stream in (kept, lost):
        stream.append(b"\x01" * 640)
    committer.dirty()
    await _until(lambda: bool(acked["lost"]))
    assert checked[0] == ["kept", "lost"]  # one check per batch, for every stream in it
    held.discard("lost")  # another server took it over
    kept.append(b"\x02" * 640)
    lost.append(b"\x02" * 640)
    committer.dirty()
    with pytest.raises(durable.StreamTakenOver):
        await committer.finish(lost)
    await committer.finish(kept)
    assert acked["lost"] == [640] and acked["kept"][-1] == 1280
    assert len(failed) == 1 and isinstance(failed[0], durable.StreamTakenOver)
    assert (tmp_path / "lost.raw").stat().st_size == 1280  # written, never acknowledged
    with pytest.raises(durable.StreamTakenOver):
        lost.append(b"\x03" * 640)


async def test_acks_wait_while_ownership_cannot_be_checked(tmp_path: Path) -> None:
    """While the check fails (database down) the audio is synced but not acked; when it works
    again every durable byte is acked, without new audio to prompt it."""

    down = True

    def check(keys: Sequence[str]) -> set[str]:
        if down:
            raise ConnectionError("database unreachable")
        return set(keys)

    committer = GroupCommitter(tmp_path, interval=0.01, held=check)
    acked: list[int] = []

    async def ack(upto: int, stored: int = 0) -> None:
        acked.append(upto)

    stream = committer.open(tmp_path / "s.raw", ack, key="rec")
    stream.append(b"\x01" * 640)
    committer.dirty()
    await _until(lambda: stream.durable == 640)
    batches = committer.batches
    await _until(lambda: committer.batches >= batches + 3)  # it keeps asking
    assert acked == [] and stream.synced == 0
    assert (tmp_path / "s.raw").stat().st_size == 640
    down = False
    await committer.finish(stream)
    assert acked == [640]


async def test_finish_gives_up_when_ownership_stays_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream ending while the check keeps failing ends with StreamUnconfirmed, unacked."""
    monkeypatch.setattr(durable, "CONFIRM_SECONDS", 0.05)

    def check(keys: Sequence[str]) -> set[str]:
        raise ConnectionError("database unreachable")

    acked: list[int] = []

    async def ack(upto: int, stored: int = 0) -> None:
        acked.append(upto)

    committer = GroupCommitter(tmp_path, interval=0.01, held=check)
    stream = committer.open(tmp_path / "s.raw", ack, key="rec")
    stream.append(b"\x01" * 640)
    committer.dirty()
    with pytest.raises(durable.StreamUnconfirmed):
        await committer.finish(stream)
    assert acked == [] and stream.durable == 640


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    import asyncio

    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_finish_after_the_committer_is_cancelled_ends_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream's clean-up that waits for a batch while the committer task is cancelled (as at a
    loop's shutdown) gets CommitterStopped at once: nothing sets the batch event any more, and a
    wait for it hung the loop's close."""
    import asyncio

    monkeypatch.setattr(durable, "sync_filesystem", lambda fd: None)
    committer = GroupCommitter(tmp_path, interval=60.0)  # no batch will come in time
    stream = committer.open(tmp_path / "s.raw", durable.NoAcks())
    stream.append(b"\x00" * 640)
    finishing = asyncio.ensure_future(committer.finish(stream))
    await asyncio.sleep(0)  # finish is now waiting for a batch
    assert committer._task is not None
    committer._task.cancel()
    with pytest.raises(durable.CommitterStopped):
        await asyncio.wait_for(finishing, 5)
