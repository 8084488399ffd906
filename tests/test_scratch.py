"""Scratch files a crash leaves behind (ingest/scratch.py): spooled bodies and temporaries of a
killed process go at the next start, those of a live process stay, whoever shares DATA_DIR."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.config import Settings
from tapevault.core.access import MemoryAccessLog
from tapevault.core.clock import FixedClock
from tapevault.core.model import SessionKind
from tapevault.core.sources import stream_key, upload_key
from tapevault.ingest.liveness import process_id
from tapevault.ingest.scratch import Spool, scratch_prefix
from tapevault.ingest.tus_store import TusStore
from tapevault.runtime import open_runtime
from tapevault.storage.local import LocalStore
from tapevault.storage.timed import unwrapped
from tests.support import incoming_objects

# A child process that spools a body the way an upload does and then hangs mid-request.
CHILD = """
import sys, time
from pathlib import Path
from tapevault.ingest.liveness import process_id
from tapevault.ingest.scratch import Spool, scratch_prefix
import tempfile
owner = process_id()
spool = Spool(Path(sys.argv[1]), owner)
with spool.reserve() as body:
    body.write_bytes(b"PHI" * 1000)
    fd, temp = tempfile.mkstemp(prefix=scratch_prefix("final", owner), suffix=".wav",
                                dir=sys.argv[2])
    fd, put = tempfile.mkstemp(prefix=scratch_prefix("put", owner), dir=sys.argv[3])
    print(body.name, Path(temp).name, Path(put).name, flush=True)
    time.sleep(60)
"""


class Writer:
    """A child process holding a spooled body, a decode temporary and a half-written put."""

    def __init__(self, data: Path) -> None:
        staging = data / "audio" / ".staging"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                str(data / "spool"),
                str(data / "work"),
                str(staging),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        body, temp, put = self.proc.stdout.readline().split()
        self.files = [data / "spool" / body, data / "work" / temp, staging / put]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for sub in ("spool", "work", "audio/.staging"):
        (root / sub).mkdir(parents=True)
    return root


def settings_for(data: Path) -> Settings:
    return Settings.load(
        {"data_dir": str(data), "public_url": "https://vault.test", "workers": "0"}, env={}
    )


def test_a_killed_writers_files_go_at_the_next_start_and_a_live_ones_stay(data: Path) -> None:
    """The spooled body, decode temporary and half-written stored object of a SIGKILLed process
    are removed when a server starts; those of a process that still runs (sharing DATA_DIR)
    are kept."""
    killed, live = Writer(data), Writer(data)
    try:
        killed.kill()
        assert all(p.exists() for p in killed.files + live.files)
        runtime = open_runtime(settings_for(data), access_log=MemoryAccessLog())
        try:
            runtime.recover()  # what `serve` and `worker` do at start-up
            assert not any(p.exists() for p in killed.files)
            assert all(p.exists() for p in live.files)
        finally:
            runtime.close()
    finally:
        live.kill()


def test_this_processes_own_leftovers_go_but_a_body_in_flight_stays(data: Path) -> None:
    """A spool file of this very process that no request has open (a leak) goes once it is a
    minute old; one a request is writing stays however old it is; a young one stays."""
    spool = Spool(data / "spool", process_id())
    old = time.time() - 120
    with spool.reserve() as busy:
        busy.write_bytes(b"in flight")
        os.utime(busy, (old, old))
        with spool.reserve() as leaked:
            leaked.write_bytes(b"leaked")
        leaked.write_bytes(b"leaked")  # as if the request's cleanup had been skipped
        young = data / "spool" / leaked.name.replace(leaked.name[:32], "0" * 32)
        young.write_bytes(b"young")
        os.utime(leaked, (old, old))
        assert spool.sweep() == 1
        assert busy.exists() and young.exists() and not leaked.exists()


def test_untagged_and_foreign_files_go_only_when_a_day_old(data: Path) -> None:
    """A spool file of an older version (no writer in its name) or of another host is kept
    until it is a day old: nobody here can tell whether its writer runs."""
    spool = Spool(data / "spool", process_id())
    legacy = data / "spool" / f"{'a' * 32}.part"
    foreign = data / "spool" / f"{'b' * 32}~elsewhere.example~123~456.part"
    for path in (legacy, foreign):
        path.write_bytes(b"x")
    assert spool.sweep() == 0
    day_old = time.time() - 25 * 3600
    for path in (legacy, foreign):
        os.utime(path, (day_old, day_old))
    assert spool.sweep() == 2 and not legacy.exists() and not foreign.exists()


def test_housekeeping_sweeps_expired_tus_uploads_without_a_new_creation(data: Path) -> None:
    """Expired tus uploads (and a dead writer's temporaries) are removed by the periodic
    housekeeping too, not only when someone creates a new upload."""
    clock = FixedClock(1_800_000_000.0)
    runtime = open_runtime(settings_for(data), clock=clock, access_log=MemoryAccessLog())
    try:
        tus = TusStore(data / "tus", max_size=1 << 20, clock=clock)
        upload_id = tus.create("partner", 10, {"session_id": "s"}, int(clock.now()) + 60)
        dead = data / "work" / f"{scratch_prefix('final', 'nohost:1:2')}x.wav"
        dead.write_bytes(b"x")
        os.utime(dead, (0, 0))
        clock.advance(3600)
        housekeeping = runtime.worker.housekeeping
        assert housekeeping is not None
        housekeeping._next_sweep = 0.0  # due now
        housekeeping.run_due()
        assert not (data / "tus" / f"{upload_id}.bin").exists()
        assert not (data / "tus" / f"{upload_id}.json").exists()
        assert not dead.exists()
    finally:
        runtime.close()


def test_an_upload_received_but_never_recorded_goes_once_an_hour_old(data: Path) -> None:
    """An upload promoted into the store's incoming/ by a process that died before committing
    its recording is removed at the next start once an hour old; one whose recording exists,
    or a young one (its commit may be under way), stays."""
    runtime = open_runtime(settings_for(data), access_log=MemoryAccessLog())
    try:
        tenant = runtime.vault.tenants.create("t", 86400).tenant
        session = runtime.vault.sessions.create_session(tenant, SessionKind.AMBIENT)
        spooled = data / "body.wav"
        spooled.write_bytes(tone_wav_bytes(0.2))
        recorded = runtime.vault.ingest.accept_upload(
            tenant, session.session_id, spooled, "wav/pcm_s16le"
        )
        store = unwrapped(runtime.vault.store)  # the local store inside the metrics timer
        assert isinstance(store, LocalStore)
        kept = upload_key(recorded.recording_id)
        orphan = upload_key("01ORPHAN0000000000000000000")
        young = stream_key("01YOUNG00000000000000000000")
        orphan_stream = stream_key("01ORPHANSTREAM0000000000000")
        for key in (orphan, young, orphan_stream):
            store.put(key, [b"PHI"])
        hours_ago = time.time() - 7200
        for key in (kept, orphan, orphan_stream):
            os.utime(store.path_for(key), (hours_ago, hours_ago))
        runtime.recover()
        assert incoming_objects(store) == sorted([kept, young])
    finally:
        runtime.close()
