"""Crash recovery for live streams, fenced so that a live writer never loses acknowledged audio.

A recording is RECEIVING while one process writes it. Its ``writer_id`` names that process and
is the fencing token: the writer acknowledges audio only after confirming, once per group commit
for all its streams, that it still holds the recording (``GroupCommitter``'s ``held``), and a
takeover changes the row first, by compare-and-set, then lets finalization read the file. So
every acknowledged byte was on disk before the takeover; a writer that finds its stream taken
acknowledges nothing more and closes the connection (4410).

The writer renews a lease on its recordings every ``HEARTBEAT_SECONDS`` (``repo.heartbeat``),
stamped by the database's clock. Recovery takes a recording over when its writer is a process
of this node that no longer runs (``is_gone``), or when that lease was last renewed more than
``STALE_SECONDS`` ago by the same database clock, in the same statement that takes it. Servers'
own clocks are never compared: one running minutes ahead cannot take a live stream. A process
never recovers its own recordings; it closes them itself and retries a close that failed
(``StreamHub``).

Where the spool is. It is on the disk of the node that wrote the stream (``spool_node``), which
may be another node than the one recovering it, and whose disk may be gone with it. The
finalization job is queued reserved for that node (``Job.node``) for ``spool_wait_seconds``
(``TAPEVAULT_STREAM_NODE_WAIT``): a node back within that time (a restart, a reboot) finalizes
every acknowledged byte from its spool. After it, the node is given up for lost and any node
finalizes the stream from its copy in the object store (``core/streamparts.py``): the bytes the
acks called ``stored``, which lag the acknowledged ones by at most one upload interval. A node
that comes back later still has the tail in its spool, which the sweep removes once the recording
is finished (the loss README "Object storage" describes).

Recovery does not cut the file to whole frames: finalization reads only whole frames anyway,
and the writer, if it still runs, may be appending to it until it notices the takeover.
"""

from __future__ import annotations

from tapevault.core.ingest import Ingest
from tapevault.core.model import RecordingStatus
from tapevault.ingest.liveness import is_gone

STALE_SECONDS = 60
SPOOL_WAIT_SECONDS = 600  # TAPEVAULT_STREAM_NODE_WAIT's default


def recover_streams(
    ingest: Ingest,
    me: str,
    *,
    stale_seconds: int = STALE_SECONDS,
    spool_wait_seconds: int = SPOOL_WAIT_SECONDS,
) -> int:
    """Take over every RECEIVING recording of another writer that died or whose lease lapsed,
    and queue it for finalization (its spool's node's job for ``spool_wait_seconds``); returns
    how many."""
    recovered = 0
    now = ingest.database_now_ms()
    for recording in ingest.recordings_with_status(RecordingStatus.RECEIVING):
        owner = recording.writer_id
        if owner == me:
            continue
        dead = owner is not None and is_gone(owner, me)
        beat = recording.heartbeat_ms
        if not dead and beat is not None and now - beat <= stale_seconds * 1000:
            continue  # a valid lease: not even tried (the take-over checks it again anyway)
        if ingest.take_over_stream(
            recording,
            stale_seconds=None if dead else stale_seconds,
            spool_wait_seconds=spool_wait_seconds,
        ):
            recovered += 1
    return recovered
