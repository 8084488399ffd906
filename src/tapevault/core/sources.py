"""Where received audio waits in the object store until it is finalized.

An accepted upload and a closed live stream are stored under ``incoming/`` before anything
acknowledges or queues them, so that any node's worker can finalize them and a node lost with
its disk loses none of it. Finalization reads them back (``LocalCopy``) and removes them once the
recording is available. Recording keys start with a partner id (hex), never with ``incoming``.
"""

from __future__ import annotations

from tapevault.core.model import Recording

INCOMING_PREFIX = "incoming/"
STREAM_FORMAT_PREFIX = "stream/"  # a source_format of a live stream's raw PCM ("stream/<enc>")


def upload_key(recording_id: str) -> str:
    """The object holding an accepted upload's bytes, as they arrived."""
    return f"{INCOMING_PREFIX}{recording_id}.src"


def stream_key(recording_id: str) -> str:
    """The object holding a closed live stream's raw PCM."""
    return f"{INCOMING_PREFIX}{recording_id}.raw"


def source_key(recording: Recording) -> str:
    """The incoming object a recording is finalized from."""
    if recording.source_format.startswith(STREAM_FORMAT_PREFIX):
        return stream_key(recording.recording_id)
    return upload_key(recording.recording_id)


def recording_of_source(key: str) -> str | None:
    """The recording id an incoming key belongs to, or None for another key."""
    if not key.startswith(INCOMING_PREFIX):
        return None
    name = key.removeprefix(INCOMING_PREFIX)
    stem, dot, ext = name.rpartition(".")
    return stem if dot and ext in ("src", "raw") and "/" not in stem else None
