"""The storage seam: every durable byte goes through ``ObjectStore``, node-local working files
through the node-local port (``storage/node_local.py``), and nothing else touches audio files.

The first tests scan the source (an AST walk, so a comment or a string never counts) for calls
that open, rename, link, fsync, write, truncate or remove files, and fail for any outside the
allow-list below, where each module says why it may. The rest run the services on a store that
behaves like a bucket (``BucketStore``: no rename, no local path) and check that accepted
uploads, closed streams, finished recordings, merged renditions and peaks all land in it, and
that what a crash or a failure can leave is found again.
"""

from __future__ import annotations

import ast
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import tapevault
from tapevault.audio_gen import tone_wav_bytes
from tapevault.config import Settings
from tapevault.core import lifecycle
from tapevault.core.access import MemoryAccessLog
from tapevault.core.clock import FixedClock
from tapevault.core.model import RecordingStatus, SessionKind
from tapevault.core.peaks import peaks_keys
from tapevault.core.sources import stream_key, upload_key
from tapevault.errors import Unavailable
from tapevault.runtime import Runtime, open_runtime
from tapevault.storage.node_local import ScratchWriter
from tests.dialects import Customer, asgi_client, customer
from tests.server import Server
from tests.support import BucketStore, incoming_objects, wait_available

SRC = Path(tapevault.__file__).parent

# Module (relative to src/tapevault; a name ending in "/" covers a package) -> why it may open,
# rename, fsync or remove files. Audio may be touched only by the first group; the others touch
# files that hold no audio.
ALLOWED: dict[str, str] = {
    # -- the store adapters and the node-local port: where audio bytes meet a disk
    "storage/": "the ObjectStore adapters (local: atomic puts, adopt by rename, pread; object "
    "stores: node-local downloads for LocalCopy) and node_local.py, the node-local port "
    "(upload bodies, temporaries, promotion into the store)",
    "observe/exposition.py": "no audio: empties prometheus-client's multiprocess directory of "
    "an earlier run's counter files at start",
    "ingest/durable.py": "node-local: a live stream's spool, group-committed append + fsync "
    "(its acks are durable on the node's disk; promoted to the store at close)",
    "ingest/tus_store.py": "node-local: a tus upload still arriving (.bin + state, fsynced per "
    "PATCH, the protocol's offset promise); completed uploads are promoted to the store",
    "ingest/scratch.py": "node-local: sweeps the scratch files of dead writers (unlink only)",
    # -- transformers: they read and write the node-local files they are handed (a LocalCopy of
    #    an object, a temporary from the node-local port), and never rename or fsync
    "ingest/decode.py": "decodes a LocalCopy into a node-local temporary it is handed",
    "ingest/pcm.py": "converts a stream's raw PCM (a LocalCopy) into a temporary it is handed",
    "ingest/merge.py": "mixes LocalCopies into a temporary it is handed (with its intermediates)",
    "ingest/peaks.py": "reads the finished WAV temporary (or a LocalCopy) to compute peaks",
    # -- files that hold no audio
    "fsutil.py": "defines fsync_dir (its callers are scanned)",
    "checkpointlog.py": "the audit log's append-only checkpoint journal",
    "core/checkpoints.py": "the audit checkpoint signing key (not audio; file I/O the audit "
    "owner may move out of the core)",
    "db/auditstore.py": "the access log's writer lock file",
    "cli_compliance.py": "writes the compliance export the operator names",
    "config.py": "checks at start-up that the data directory is writable (an empty temp file)",
    "http/playerpage.py": "reads the player page's static assets from the package",
    "ingest/liveness.py": "reads /proc/PID/stat to tell whether a writer runs, and makes the "
    "data directory's node-id file once",
    "deliverylog.py": "reads nginx's delivery log (byte counts of X-Accel-Redirect hand-offs; "
    "no audio)",
    "audio_gen.py": "generates sample audio for the demo and tests, where the caller says",
    "demo.py": "a temporary directory for the demo's sample audio",
    "client/_download.py": "the Python client: downloads to the user's disk, not the server's",
    "client/_sync.py": "the Python client: reads the file the user uploads",
    "client/_async.py": "the Python client: reads the file the user uploads",
}

_OS_CALLS = {
    "open",
    "fdopen",
    "rename",
    "renames",
    "replace",
    "link",
    "symlink",
    "fsync",
    "fdatasync",
    "unlink",
    "remove",
    "truncate",
    "ftruncate",
    "write",
    "pwrite",
    "pwritev",
    "writev",
    "sendfile",
    "copy_file_range",
}
_MODULE_CALLS = {
    "io": {"open"},
    "tempfile": {
        "mkstemp",
        "mkdtemp",
        "NamedTemporaryFile",
        "TemporaryFile",
        "SpooledTemporaryFile",
        "TemporaryDirectory",
    },
    "shutil": {"copy", "copy2", "copyfile", "copytree", "move", "rmtree"},
    "av": {"open"},
}
# Methods of pathlib.Path (and file objects) that write, move or remove files.
_PATH_METHODS = {"write_bytes", "write_text", "read_bytes", "touch", "unlink", "truncate"}
_FILE_MODES = {"r", "rb", "w", "wb", "a", "ab", "r+b", "w+b", "a+b", "x", "xb", "r+", "w+"}


def file_operations(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, what) for every call in ``tree`` that touches a file."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "shutil", "tempfile"):
            for alias in node.names:
                names = _OS_CALLS if node.module == "os" else _MODULE_CALLS[node.module]
                if alias.name in names:
                    yield node.lineno, f"from {node.module} import {alias.name}"
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name):
            if func.id in ("open", "fsync_dir"):
                yield node.lineno, f"{func.id}()"
            continue
        if not isinstance(func, ast.Attribute):
            continue
        owner = func.value.id if isinstance(func.value, ast.Name) else None
        name = func.attr
        if owner == "os" and name in _OS_CALLS:
            yield node.lineno, f"os.{name}()"
        elif owner in _MODULE_CALLS and name in _MODULE_CALLS[owner]:
            yield node.lineno, f"{owner}.{name}()"
        elif owner in _MODULE_CALLS or owner == "os":
            continue
        elif name in _PATH_METHODS:
            yield node.lineno, f".{name}()"
        elif name in ("rename", "replace") and len(node.args) == 1 and not node.keywords:
            yield node.lineno, f".{name}()"  # Path.rename/replace (str.replace takes two)
        elif name == "open" and _opens_a_file(node):
            yield node.lineno, ".open()"


def _opens_a_file(call: ast.Call) -> bool:
    """``path.open()`` or ``path.open("rb")``: no arguments, or a file mode first."""
    if not call.args and not call.keywords:
        return True
    first = call.args[0] if call.args else None
    return isinstance(first, ast.Constant) and first.value in _FILE_MODES


def scan() -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).as_posix()
        hits = list(file_operations(ast.parse(path.read_text(), str(path))))
        if hits:
            found[module] = sorted(hits)
    return found


def allowed(module: str) -> str | None:
    """The ALLOWED entry that covers ``module``, if any."""
    if module in ALLOWED:
        return module
    return next((e for e in ALLOWED if e.endswith("/") and module.startswith(e)), None)


def test_no_code_outside_the_store_adapters_and_the_node_local_port_touches_files() -> None:
    """Only the modules of the allow-list (each with its reason) open, rename, fsync, write or
    remove files; in particular the core and the HTTP layer touch none that holds audio."""
    outside = {module: hits for module, hits in scan().items() if allowed(module) is None}
    assert outside == {}, (
        "file operations outside the store adapters and the node-local port "
        "(go through ObjectStore or NodeLocalFiles, or add the module to ALLOWED with a reason): "
        f"{outside}"
    )


def test_the_allow_list_names_only_modules_that_need_it() -> None:
    """Every allowed module still touches files: a stale entry would let a later change in
    without review."""
    found = scan()
    used = {allowed(module) for module in found}
    assert sorted(entry for entry in ALLOWED if entry not in used) == []


def test_the_scan_sees_each_kind_of_file_operation() -> None:
    """The scan itself: each form of call it must catch is caught, and look-alikes are not."""
    caught = """
import os, shutil, tempfile
from os import fsync
open("f", "wb"); os.open("f", os.O_RDONLY); os.replace("a", "b"); os.fsync(3)
path.write_bytes(b""); path.unlink(); path.rename(other); path.replace(other)
path.open("rb"); path.open(); tempfile.mkstemp(); shutil.move("a", "b"); fsync_dir(d)
"""
    kinds = [what for _, what in file_operations(ast.parse(caught))]
    assert len(kinds) == 14, kinds
    harmless = """
text.replace("a", "b"); replace(recording, status=s); store.open(owner, upload_id)
links.open(link_id, secret); parsed.replace(tzinfo=UTC); os.path.join("a", "b")
"""
    assert list(file_operations(ast.parse(harmless))) == []


# --- the services on a bucket ---------------------------------------------------------------


@pytest.fixture
def bucket() -> BucketStore:
    return BucketStore()


@pytest.fixture
def on_bucket(
    settings: Settings, clock: FixedClock, access_log: MemoryAccessLog, bucket: BucketStore
) -> Iterator[Runtime]:
    rt = open_runtime(settings, clock=clock, access_log=access_log, store=bucket)
    try:
        yield rt
    finally:
        rt.close()


def node_files(runtime: Runtime) -> list[str]:
    """The files in this node's working directories (spool, streams, work)."""
    local = runtime.local
    return sorted(
        str(p.relative_to(local.data_dir))
        for directory in (local.spool_dir, local.streams_dir, local.work_dir)
        for p in directory.rglob("*")
        if p.is_file()
    )


async def upload(client: httpx.AsyncClient, who: Customer, session_id: str, body: bytes) -> str:
    response = await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        content=body,
    )
    assert response.status_code == 202, response.text
    recording_id: str = response.json()["recording_id"]
    return recording_id


async def test_uploads_renditions_and_peaks_land_in_the_store(
    on_bucket: Runtime, bucket: BucketStore, clock: FixedClock
) -> None:
    """On a store with no rename and no local path: an accepted upload is in the store under
    incoming/ when the 202 is sent, and nothing of it stays on the node; finalization puts the
    WAV and its peaks there and removes the incoming object; the session's merged rendition
    lands there too; the gateway serves the stored bytes."""
    who = customer(on_bucket, clock)
    async with asgi_client(on_bucket) as client:
        created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
        session_id = created.json()["ambient_session_id"]
        first = await upload(client, who, session_id, tone_wav_bytes(1.0))
        second = await upload(client, who, session_id, tone_wav_bytes(0.5))
        assert incoming_objects(bucket) == sorted([upload_key(first), upload_key(second)])
        assert node_files(on_bucket) == []
        ended = await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=who.suki)
        assert ended.status_code == 200
        on_bucket.worker.run_until_idle()
        recordings = on_bucket.repo.list_recordings(who.tenant.partner_id, session_id)
        merged = on_bucket.repo.get_merged(who.tenant.partner_id, session_id)
        assert merged is not None and merged.status is RecordingStatus.AVAILABLE
        assert [r.status for r in recordings] == [RecordingStatus.AVAILABLE] * 2
        for r in (*recordings, merged):
            assert bucket.stat(r.storage_key) is not None, r
            assert all(bucket.stat(key) is not None for key in peaks_keys(r.storage_key)), r
        assert incoming_objects(bucket) == []
        assert node_files(on_bucket) == []
        links = await client.get(
            f"/api/v1/ambient/session/{session_id}/recording", headers=who.suki
        )
        url = links.json()["recordings"][0]["presigned_url"]
        played = await client.get(url.removeprefix("https://vault.test"))
        assert played.status_code == 200
        assert played.content == bucket.objects[recordings[0].storage_key][0]


def test_a_closed_stream_is_in_the_store_before_its_job_is_queued(
    on_bucket: Runtime, bucket: BucketStore, clock: FixedClock
) -> None:
    """Closing a stream promotes its spool into the store (incoming/<id>.raw) before the job
    is queued, so any node's worker can finalize it; the spool goes once the job is committed.
    A store that is down fails the close (it is retried) and keeps the spool."""
    who = customer(on_bucket, clock)
    vault = on_bucket.vault
    session = vault.sessions.create_session(who.tenant, SessionKind.AMBIENT)
    recording = vault.ingest.open_stream(
        who.tenant,
        session.session_id,
        "stream/pcm_s16le",
        "writer-a",
        sample_rate=16000,
        channels=1,
        bits_per_sample=16,
    )
    spool = vault.local.stream_spool(recording.recording_id)
    pcm = bytes(range(256)) * 125  # 32,000 bytes: one second
    spool.write_bytes(pcm)
    bucket.fail_puts = True
    with pytest.raises(Unavailable):
        vault.ingest.close_stream(recording)
    assert spool.read_bytes() == pcm
    current = on_bucket.repo.get_recording(recording.recording_id)
    assert current is not None and current.status is RecordingStatus.RECEIVING
    bucket.fail_puts = False
    vault.ingest.close_stream(recording)  # the retry
    assert bucket.objects[stream_key(recording.recording_id)][0] == pcm
    assert not spool.exists()
    on_bucket.worker.run_until_idle()
    done = on_bucket.repo.get_recording(recording.recording_id)
    assert done is not None and done.status is RecordingStatus.AVAILABLE
    assert done.duration_ms == 1000 and bucket.stat(done.storage_key) is not None
    assert incoming_objects(bucket) == [] and node_files(on_bucket) == []


def test_a_recovered_streams_spool_is_promoted_by_the_worker(
    on_bucket: Runtime, bucket: BucketStore, clock: FixedClock
) -> None:
    """A stream whose writer died was never closed: recovery queues it, and the worker of the
    node holding its spool promotes that into the store, finalizes it and removes the spool."""
    who = customer(on_bucket, clock)
    vault = on_bucket.vault
    session = vault.sessions.create_session(who.tenant, SessionKind.AMBIENT)
    recording = vault.ingest.open_stream(
        who.tenant,
        session.session_id,
        "stream/pcm_s16le",
        "nohost:1:2",
        sample_rate=16000,
        channels=1,
        bits_per_sample=16,
    )
    spool = vault.local.stream_spool(recording.recording_id)
    spool.write_bytes(b"\x01\x00" * 8000)
    assert vault.ingest.take_over_stream(recording, stale_seconds=None)
    on_bucket.worker.run_until_idle()
    done = on_bucket.repo.get_recording(recording.recording_id)
    assert done is not None and done.status is RecordingStatus.AVAILABLE
    assert done.duration_ms == 500 and done.recovered
    assert not spool.exists() and incoming_objects(bucket) == []


async def test_a_store_that_is_down_refuses_uploads_with_503_and_keeps_nothing(
    on_bucket: Runtime, bucket: BucketStore, clock: FixedClock
) -> None:
    """An upload while the store is down is a 503 (the adapter's ``StoreUnavailable``), with no
    recording, no incoming object and no spooled body left; once it is back, uploads work."""
    who = customer(on_bucket, clock)
    async with asgi_client(on_bucket) as client:
        created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
        session_id = created.json()["ambient_session_id"]
        bucket.fail_puts = True
        refused = await client.post(
            f"/api/v1/ambient/session/{session_id}/audio",
            headers={**who.suki, "content-type": "audio/wav"},
            content=tone_wav_bytes(0.5),
        )
        assert refused.status_code == 503, refused.text
        assert on_bucket.repo.list_recordings(who.tenant.partner_id, session_id) == []
        assert bucket.objects == {} and node_files(on_bucket) == []
        bucket.fail_puts = False
        await upload(client, who, session_id, tone_wav_bytes(0.5))


def test_finalization_waits_for_a_store_that_is_down_and_never_fails_for_it(
    on_bucket: Runtime, bucket: BucketStore, clock: FixedClock, tmp_path: Path
) -> None:
    """An acknowledged upload whose finalization meets a store that is down stays processing,
    however long that lasts (more tries than MAX_ATTEMPTS), and finishes once it is back."""
    who = customer(on_bucket, clock)
    vault = on_bucket.vault
    session = vault.sessions.create_session(who.tenant, SessionKind.AMBIENT)
    body = tmp_path / "body.wav"
    body.write_bytes(tone_wav_bytes(0.5))
    recording = vault.ingest.accept_upload(who.tenant, session.session_id, body, "wav/pcm_s16le")
    bucket.fail_puts = True
    for _ in range(lifecycle.MAX_ATTEMPTS + 2):
        on_bucket.worker.run_until_idle()
        clock.advance(61)
    waiting = on_bucket.repo.get_recording(recording.recording_id)
    assert waiting is not None and waiting.status is RecordingStatus.PROCESSING
    assert node_files(on_bucket) == []
    bucket.fail_puts = False
    on_bucket.worker.run_until_idle()
    done = on_bucket.repo.get_recording(recording.recording_id)
    assert done is not None and done.status is RecordingStatus.AVAILABLE


def test_sources_and_spools_nothing_needs_are_swept_and_the_rest_kept(
    on_bucket: Runtime, bucket: BucketStore, clock: FixedClock, tmp_path: Path
) -> None:
    """An incoming object or a stream spool an hour old goes when its recording is available
    (a late close after recovery finished the stream); those of a recording still receiving
    or processing stay."""
    who = customer(on_bucket, clock)
    vault = on_bucket.vault
    session = vault.sessions.create_session(who.tenant, SessionKind.AMBIENT)
    body = tmp_path / "body.wav"
    body.write_bytes(tone_wav_bytes(0.5))
    finished = vault.ingest.accept_upload(who.tenant, session.session_id, body, "wav/pcm_s16le")
    on_bucket.worker.run_until_idle()
    pending = vault.ingest.open_stream(
        who.tenant,
        session.session_id,
        "stream/pcm_s16le",
        "writer-a",
        sample_rate=16000,
        channels=1,
        bits_per_sample=16,
    )
    late = stream_key(finished.recording_id)
    bucket.put(late, [b"PHI"])
    bucket.put(stream_key(pending.recording_id), [b"PCM"])
    stale_spool = vault.local.stream_spool(finished.recording_id)
    live_spool = vault.local.stream_spool(pending.recording_id)
    hours_ago = time.time() - 7200  # the sweep goes by the files' own (real) times
    for spool in (stale_spool, live_spool):
        spool.write_bytes(b"PCM")
        os.utime(spool, (hours_ago, hours_ago))
    for key in (late, stream_key(pending.recording_id)):
        bucket.age(key, 7200)
    on_bucket.recover()
    assert incoming_objects(bucket) == [stream_key(pending.recording_id)]
    assert live_spool.exists() and not stale_spool.exists()


def test_a_failed_commit_removes_the_promoted_upload(
    on_bucket: Runtime, bucket: BucketStore, clock: FixedClock, tmp_path: Path
) -> None:
    """An upload whose recording cannot be inserted (the session ended meanwhile is refused
    before; here the database refuses the row) leaves no incoming object behind."""
    who = customer(on_bucket, clock)
    vault = on_bucket.vault
    session = vault.sessions.create_session(who.tenant, SessionKind.AMBIENT)
    body = tmp_path / "body.wav"
    body.write_bytes(tone_wav_bytes(0.2))

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the database went away")

    on_bucket.repo.add_recording = refuse  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        vault.ingest.accept_upload(who.tenant, session.session_id, body, "wav/pcm_s16le")
    assert bucket.puts and incoming_objects(bucket) == []
    assert not body.exists()


def test_incoming_objects_no_recording_names_are_swept_on_any_store(
    on_bucket: Runtime, bucket: BucketStore
) -> None:
    """The sweep lists the store's incoming/ objects: one no recording names goes once an hour
    old (a crash between the promotion and the commit), a young one stays."""
    orphan, young = upload_key("01ORPHAN0000000000000000000"), stream_key("01YOUNG" + "0" * 20)
    bucket.put(orphan, [b"PHI"])
    bucket.put(young, [b"PHI"])
    bucket.age(orphan, 7200)
    on_bucket.recover()
    assert incoming_objects(bucket) == [young]


def test_uploads_an_older_version_left_in_data_dir_incoming_are_finished(
    runtime: Runtime, clock: FixedClock, tmp_path: Path
) -> None:
    """An upload accepted by a version that kept them in DATA_DIR/incoming (its job queued) is
    moved into the store at start-up and finalized as usual."""
    who = customer(runtime, clock)
    vault = runtime.vault
    session = vault.sessions.create_session(who.tenant, SessionKind.AMBIENT)
    body = tmp_path / "body.wav"
    body.write_bytes(tone_wav_bytes(0.5))
    recording = vault.ingest.accept_upload(who.tenant, session.session_id, body, "wav/pcm_s16le")
    legacy = runtime.settings.data_dir / "incoming"
    legacy.mkdir()
    key = upload_key(recording.recording_id)
    with vault.store.local_copy(key) as stored:
        os.replace(stored, legacy / f"{recording.recording_id}.src")
    runtime.recover()
    assert list(legacy.iterdir()) == []
    runtime.worker.run_until_idle()
    done = runtime.repo.get_recording(recording.recording_id)
    assert done is not None and done.status is RecordingStatus.AVAILABLE


# --- a real server, killed right after the acknowledgement ----------------------------------


def test_an_upload_acknowledged_just_before_a_sigkill_is_finished_after_a_restart(
    tmp_path: Path,
) -> None:
    """202, then SIGKILL before any worker ran: the restarted server finalizes the upload from
    the store and serves it; nothing of it was lost."""
    server = Server(tmp_path / "data").start(TAPEVAULT_WORKERS="0")
    try:
        tenant = server.tenant()
        headers = {"sdp_suki_token": server.token(tenant["partner_id"])}
        created = httpx.post(f"{server.base}/api/v1/ambient/session/create", headers=headers)
        session_id = created.json()["ambient_session_id"]
        wav = tone_wav_bytes(1.0)
        sent = httpx.post(
            f"{server.base}/api/v1/ambient/session/{session_id}/audio",
            headers={**headers, "content-type": "audio/wav"},
            content=wav,
        )
        assert sent.status_code == 202, sent.text
        server.kill()
        server.start()
        (recording,) = wait_available(server, headers, session_id)
        assert recording["status"] == "available", recording
        assert recording["bytes"] == len(wav)
    finally:
        server.close()


# --- the node-local port itself ---------------------------------------------------------------


def test_promotion_copies_when_the_store_is_on_another_filesystem(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The local store adopts a node-local file by rename; when the rename crosses filesystems
    (EXDEV) the port copies it instead, and the local file is gone either way."""
    local, store = runtime.local, runtime.vault.store
    adopted = local.work_dir / "adopted"
    adopted.write_bytes(b"one")
    assert local.promote(adopted, upload_key("01ADOPTED" + "0" * 17)).size == 3
    assert not adopted.exists()

    rename = os.replace

    def cross_device(src: str | Path, dst: str | Path) -> None:
        if Path(src).parent == local.work_dir:  # the node's disk is not the store's
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        rename(src, dst)  # the store's own staging rename

    monkeypatch.setattr(os, "replace", cross_device)
    copied = local.work_dir / "copied"
    copied.write_bytes(b"two!")
    key = upload_key("01COPIED" + "0" * 18)
    assert local.promote(copied, key).size == 4
    assert not copied.exists() and store.stat(key) is not None


def test_a_scratch_writer_never_overwrites_and_an_aborted_one_leaves_nothing(
    tmp_path: Path,
) -> None:
    """A body's file is created new (0600; an existing path is refused, never overwritten) and
    an aborted body leaves no file."""
    taken = tmp_path / "taken"
    taken.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        ScratchWriter(taken)
    assert taken.read_bytes() == b"someone else's"
    body = ScratchWriter(tmp_path / "body")
    body.write(b"half a body")
    assert (tmp_path / "body").stat().st_mode & 0o777 == 0o600
    body.abort()
    assert not (tmp_path / "body").exists()


def test_a_temporary_goes_whatever_happens_and_a_bad_legacy_name_stays(
    runtime: Runtime,
) -> None:
    """A decoder's temporary is removed when its block ends, by an error too; a file in the
    legacy incoming directory whose name is no valid key is left in place (logged), not a
    crash at start-up."""
    local = runtime.local
    with pytest.raises(RuntimeError), local.temporary("final", ".wav") as tmp:
        tmp.write_bytes(b"PHI")
        raise RuntimeError("the decoder crashed")
    assert not tmp.exists()
    legacy = local.data_dir / "incoming"
    legacy.mkdir()
    odd = legacy / "not a recording.src"
    odd.write_bytes(b"x")
    assert local.promote_legacy_uploads() == 0 and odd.exists()
