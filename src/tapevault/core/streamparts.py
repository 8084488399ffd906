"""A live stream's copy in the object store: its acknowledged prefix, as consecutive parts.

While a stream is live its acknowledged bytes are durable on its node's disk (the spool); every
``TAPEVAULT_STREAM_UPLOAD_INTERVAL`` the part acknowledged since the last copy is put in the
store as an object of its own, ``streams/<recording_id>/<offset>.raw``, named by the stream
offset of its first byte. The parts chain: the first is at offset 0, each next one starts where
the previous one ends, so the store alone says how much of the stream it holds (``stored``),
which is what every ack reports besides the node-durable count, and what a node that lost its
disk can still finalize.

Why parts, not one object grown in place: S3 and GCS have no append, and putting the grown prefix
again each time costs the square of the stream (an hour of 16 kHz speech copied every 10 s moves
~20 GiB to keep 115 MiB). Parts move each byte once, cost one PUT per interval (360 for an hour
at 10 s), need no memory beyond one chunk, and each is atomic (a put is all or nothing), so a
process killed mid-copy leaves no half part: the chain simply ends one part earlier. A part put
again (a retry after an error that stored it anyway) holds the same bytes from the same offset,
and at least as many.

Only stat is needed to walk the chain (one HEAD a part), so it works on every store, including
those that cannot list. After the recording is finalized its parts are deleted; the sweep removes
those of recordings finished or gone (``ingest/scratch.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tapevault.core.ports import Delete, Stat

STREAMS_PREFIX = "streams/"
PART_SUFFIX = ".raw"
_OFFSET_DIGITS = 16  # zero-padded, so a listing sorts parts in stream order


@dataclass(frozen=True, slots=True)
class Part:
    key: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


def part_key(recording_id: str, offset: int) -> str:
    """The object holding the part of a live stream that starts at byte ``offset``."""
    return f"{STREAMS_PREFIX}{recording_id}/{offset:0{_OFFSET_DIGITS}d}{PART_SUFFIX}"


def recording_of_part(key: str) -> str | None:
    """The recording id a part's key belongs to, or None for another key."""
    if not key.startswith(STREAMS_PREFIX):
        return None
    recording_id, slash, name = key.removeprefix(STREAMS_PREFIX).partition("/")
    offset = name.removesuffix(PART_SUFFIX)
    if not slash or not recording_id or offset == name or not offset.isdigit():
        return None
    return recording_id


def stored_parts(store: Stat, recording_id: str) -> list[Part]:
    """The chain of a stream's parts from offset 0, as far as it is unbroken: their bytes,
    in order, are the stream's first ``stored_bytes`` bytes."""
    parts: list[Part] = []
    offset = 0
    while True:
        key = part_key(recording_id, offset)
        info = store.stat(key)
        if info is None or info.size <= 0:
            return parts
        parts.append(Part(key, offset, info.size))
        offset += info.size


def stored_bytes(parts: list[Part]) -> int:
    return parts[-1].end if parts else 0


class _StatDelete(Stat, Delete, Protocol):
    pass


def drop_stream_parts(store: _StatDelete, recording_id: str) -> int:
    """Remove a stream's parts (its recording is finalized or gone); how many. The last
    first, so that one interrupted leaves a chain the next attempt still walks."""
    removed = 0
    for part in reversed(stored_parts(store, recording_id)):
        removed += store.delete(part.key)
    return removed
