"""Crash recovery for live streams.

A recording is RECEIVING while some process writes it. When that process dies (SIGKILL, power
loss), the recording's file holds everything that was acknowledged (synced before its ack) and
maybe more. Recovery cuts the file to whole frames, marks the recording ``recovered`` and queues
it for finalization like a stream that ended normally; the session can then be ended and served.

A writer is dead when it is a process of this host that no longer runs, or when its heartbeat
is older than ``STALE_SECONDS`` (a process on another host that stopped beating).
"""

from __future__ import annotations

import os

from tapevault.core.clock import now_ms
from tapevault.core.model import Recording, RecordingStatus
from tapevault.core.vault import Vault
from tapevault.ingest.liveness import is_gone
from tapevault.ingest.pcm import ENCODINGS, whole_frames

STALE_SECONDS = 60


def writer_is_dead(recording: Recording, now: int, me: str) -> bool:
    owner = recording.writer_id or ""
    if owner == me:
        return False
    if is_gone(owner):
        return True
    beat = recording.heartbeat_ms or recording.created_ms
    return now - beat > STALE_SECONDS * 1000


def recover_streams(vault: Vault, me: str) -> int:
    """Finish every RECEIVING recording whose writer is dead; returns how many."""
    now = now_ms(vault.clock)
    recovered = 0
    for recording in vault.repo.recordings_with_status(RecordingStatus.RECEIVING):
        if not writer_is_dead(recording, now, me):
            continue
        path = vault.stream_path(recording.recording_id)
        encoding = recording.source_format.removeprefix("stream/")
        if path.exists() and encoding in ENCODINGS:
            size = path.stat().st_size
            keep = whole_frames(size, encoding, max(1, recording.channels))
            if keep != size:
                os.truncate(path, keep)
        else:
            path.touch()  # nothing reached the disk: finalize as an empty recording
        vault.close_stream(recording, recovered=True)
        recovered += 1
    return recovered
