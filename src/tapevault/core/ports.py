"""What the core needs from the outside world, as small protocols.

The core is handed a ``Repository`` (metadata), an ``ObjectStore`` (audio bytes) and a ``Clock``;
it never imports SQL, HTTP or a cloud SDK. Implementations live in ``tapevault.db`` and
``tapevault.storage``; a contract test suite runs every implementation through the same cases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from tapevault.core.catalog import RecordingFacts, SessionQuery
from tapevault.core.events import Event
from tapevault.core.model import (
    ApiKey,
    Delivery,
    Job,
    PlayerLink,
    Recording,
    RecordingStatus,
    Session,
    SessionStatus,
    SigningKey,
    Tenant,
)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one stored object."""

    size: int
    mtime: float


class Put(Protocol):
    def put(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        """Store the chunks under key atomically: readers see all of it or nothing."""
        ...


class GetRange(Protocol):
    def read_range(
        self, key: str, offset: int, length: int, chunk_size: int = ...
    ) -> AsyncIterator[bytes]:
        """Yield ``length`` bytes from ``offset`` in chunks of at most ``chunk_size``."""
        ...


class Stat(Protocol):
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and mtime of the object, or None when there is none."""
        ...


class Delete(Protocol):
    def delete(self, key: str) -> bool:
        """Remove the object; True when something was removed."""
        ...


class LocalCopy(Protocol):
    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        """A local file holding the object, for work that needs a path (mixing renditions):
        the file itself on a local store, a temporary download elsewhere."""
        ...


# Given a session and its recordings as they are inside a state change's transaction (after the
# change), the events to write with it: the webhook outbox (see core/events.py).
Announcer = Callable[[Session, Sequence[Recording]], Sequence[Event | None]]


@dataclass(frozen=True, slots=True)
class MediaAttributes:
    """How a store should describe an object when it serves it itself (direct delivery): the
    store's presigned URLs cannot override response headers (apache/arrow-rs-object-store#791),
    so the media type and the download name are written on the object when it is put."""

    content_type: str
    filename: str | None = None


@runtime_checkable
class PutMedia(Protocol):
    def put_media(self, key: str, chunks: Iterable[bytes], media: MediaAttributes) -> ObjectInfo:
        """``put``, with the attributes the store answers its own GETs with."""
        ...


@runtime_checkable
class Presign(Protocol):
    """A store that can hand out its own time-limited GET URLs (S3 SigV4, GCS V4, Azure SAS);
    a local directory cannot."""

    def presign(self, key: str, expires_in_seconds: int) -> str:
        """A URL that reads the object (Range included) for ``expires_in_seconds``."""
        ...


# Given a session and its recordings as they are inside a state change's transaction, the merged
# rendition to queue with its job, or None (see core/mergeplan.py).
MergePlanner = Callable[[Session, Sequence[Recording]], tuple[Recording, Job] | None]


@dataclass(frozen=True, slots=True)
class MergeQueued:
    """A merged rendition queued by a state change, and the one it replaced (whose file the
    caller removes once the change is committed)."""

    rendition: Recording
    replaced: Recording | None


class ObjectStore(Put, GetRange, Stat, Delete, LocalCopy, Protocol):
    """Every capability the vault uses; callers that need less ask for less."""


# Optional capabilities, checked with ``isinstance`` where a caller can do better with them.


@runtime_checkable
class Adopt(Protocol):
    """A store on this node's own filesystem, which can take a finished node-local file by
    renaming it into place instead of copying it (the local store's fast path for uploads)."""

    def adopt(self, key: str, path: Path) -> ObjectInfo:
        """Make the file at ``path`` the object ``key``, atomically and durably (fsync, rename,
        fsync of the directory); ``path`` is gone afterwards. Raises ``OSError`` (``EXDEV``)
        when the file is on another filesystem: the caller then copies it with ``put``."""
        ...


@dataclass(frozen=True, slots=True)
class ListedObject:
    key: str
    info: ObjectInfo


@runtime_checkable
class ListKeys(Protocol):
    """A store that can enumerate its objects under a prefix (what the sweep of incoming
    objects no recording names needs; a store without it leaves them to a bucket lifecycle
    rule)."""

    def list_keys(self, prefix: str) -> Iterable[ListedObject]:
        """Every object whose key starts with ``prefix`` (a directory-like ``incoming/``)."""
        ...


class NodeLocalFiles(Protocol):
    """Working files on this node's own disk: an upload still arriving, a live stream's spool,
    a decoder's temporary output. None of them outlives the node; what must is promoted into
    the ``ObjectStore``, and only then acknowledged or recorded. The core names such files but
    never opens them: it asks this port."""

    def size(self, path: Path) -> int:
        """The size of a node-local file."""
        ...

    def promote(self, path: Path, key: str, *, keep: bool = False) -> ObjectInfo:
        """Store the node-local file as the object ``key``, atomically: when this returns, the
        bytes survive the loss of this process and of this node. Without ``keep`` the local
        file is gone afterwards (renamed into place when the store can adopt it)."""
        ...

    # The directory of the live streams' spools (their group commit fsyncs it).
    streams_dir: Path
    # This node's identity, kept on its disk: a spool lives on the node of this id, and is lost
    # with it (``Recording.spool_node``).
    node_id: str

    def stream_spool(self, recording_id: str) -> Path:
        """Where a live stream's acknowledged bytes are appended on this node."""
        ...

    def promote_range(self, path: Path, key: str, offset: int, length: int) -> ObjectInfo:
        """Store ``length`` bytes of the node-local file from ``offset`` as the object ``key``,
        atomically (a live stream's part, copied while the stream goes on)."""
        ...

    def store_on_this_disk(self) -> bool:
        """Whether the store's objects are on this node's own filesystem (so a copy there
        survives nothing a node-local file does not)."""
        ...

    def discard(self, path: Path) -> None:
        """Remove a node-local file if it is there."""
        ...


class Repository(Protocol):
    """Metadata storage. Every session and recording lookup is scoped by partner."""

    def create_tenant(self, partner: Tenant) -> None: ...

    def get_tenant(self, partner_id: str) -> Tenant | None: ...

    def get_tenant_by_workspace(self, workspace_id: str) -> Tenant | None: ...

    def get_tenant_by_kore_client(self, client_id: str) -> Tenant | None: ...

    def set_tenant_retention(self, partner_id: str, seconds: int) -> None: ...

    def set_kore_client_secret(self, partner_id: str, secret: str) -> None: ...

    def set_storage_quota(self, partner_id: str, quota_bytes: int | None) -> None: ...

    def set_delivery(self, partner_id: str, delivery: Delivery) -> None: ...

    def set_recording_enabled(self, partner_id: str, enabled: bool) -> None: ...

    def add_api_key(self, key: ApiKey) -> None: ...

    def get_api_key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    def list_api_keys(self, partner_id: str) -> Sequence[ApiKey]: ...

    def revoke_api_key(self, partner_id: str, key_id: str, now_ms: int) -> bool: ...

    def add_player_link(self, link: PlayerLink) -> None: ...

    def get_player_link(self, link_id: str) -> PlayerLink | None: ...

    def list_player_links(self, partner_id: str, session_id: str) -> Sequence[PlayerLink]: ...

    def revoke_player_link(self, partner_id: str, link_id: str, now_ms: int) -> bool: ...

    def create_session(self, session: Session) -> None: ...

    def get_session(self, partner_id: str, session_id: str) -> Session | None: ...

    def get_session_with_recordings(
        self, partner_id: str, session_id: str
    ) -> tuple[Session | None, Sequence[Recording]]:
        """The session and its recordings in one round trip (the recording-URL hot path)."""
        ...

    def update_session_status(
        self,
        partner_id: str,
        session_id: str,
        status: SessionStatus,
        ended_ms: int | None,
        *,
        if_status: SessionStatus | None = None,
    ) -> bool:
        """Set the stored status; with ``if_status``, only if it is still that (compare and
        set, in the database). Whether a row changed."""
        ...

    def end_session(
        self,
        partner_id: str,
        session_id: str,
        ended_ms: int,
        plan: MergePlanner,
        announce: Announcer | None = None,
    ) -> MergeQueued | None:
        """Mark the session completed and, in the same transaction (the session locked), write
        the events ``announce`` finds and queue the merged rendition ``plan`` finds due; what
        was queued, if anything."""
        ...

    def next_sequence_number(self, session_id: str) -> int: ...

    def stored_bytes(self, partner_id: str) -> int:
        """Bytes of the tenant's available recordings (what its storage quota counts)."""
        ...

    def add_recording(self, recording: Recording, job: Job | None = None) -> None:
        """Insert (with its job, atomically); raises ``SequenceTaken`` when the (session,
        sequence) pair exists already, ``ChannelTaken`` when the recording's call channel holds
        a recording that has not failed."""
        ...

    def update_recording(
        self,
        recording: Recording,
        *,
        expect: RecordingStatus,
        writer_id: str | None = None,
        job: Job | None = None,
    ) -> bool:
        """Compare-and-set: write the row only if it is still in status ``expect`` (and, when
        given, still written by ``writer_id``), queueing ``job`` in the same transaction; False
        when another actor moved it first."""
        ...

    def finish_recording(
        self,
        recording: Recording,
        *,
        expect: RecordingStatus,
        plan: MergePlanner,
        announce: Announcer | None = None,
    ) -> tuple[bool, MergeQueued | None]:
        """``update_recording`` to a final state and, in the same transaction (its session
        locked first), write the events ``announce`` finds and queue the merged rendition
        ``plan`` then finds due: (written, queued)."""
        ...

    def recordings_with_status(self, status: RecordingStatus) -> Sequence[Recording]: ...

    def database_now_ms(self) -> int:
        """The database's clock, the one every server reads for live streams' leases."""
        ...

    def heartbeat(self, writer_id: str) -> None:
        """Renew the lease on every RECEIVING recording of this writer, as of the database's
        clock (servers' clocks may disagree; the database's is the one every server reads)."""
        ...

    def streams_held_by(self, writer_id: str) -> set[str]:
        """The ids of the RECEIVING recordings this writer still holds (its fencing check)."""
        ...

    def take_over_stream(
        self, recording_id: str, writer_id: str | None, stale_ms: int | None, job: Job
    ) -> bool:
        """Compare-and-set: move a RECEIVING recording still held by ``writer_id`` to
        PROCESSING (recovered, no writer) and queue ``job``, atomically; with ``stale_ms``, only
        if its lease was last renewed more than that long ago by the database's clock. False
        when the writer closed it, another recovery took it, or the lease is still valid."""
        ...

    def get_session_by_external_id(self, partner_id: str, external_id: str) -> Session | None: ...

    def update_session_attributes(
        self, partner_id: str, session_id: str, attributes: Mapping[str, str]
    ) -> None: ...

    def list_sessions(self, partner_id: str) -> Sequence[Session]: ...

    def find_sessions(self, query: SessionQuery) -> Sequence[tuple[Session, RecordingFacts]]:
        """Up to ``query.limit + 1`` sessions of ``query.partner_id`` matching its filters,
        newest first by (created_ms, session_id) and after ``query.after``, each with the facts
        of its own recordings (never the merged rendition)."""
        ...

    def set_session_retention(self, partner_id: str, session_id: str, seconds: int | None) -> bool:
        """Override the tenant's retention for one session (None: stop overriding)."""
        ...

    def set_hold(
        self,
        partner_id: str,
        session_id: str,
        *,
        reason: str,
        by: str,
        set_ms: int,
        events: Sequence[Event] = (),
    ) -> bool:
        """Put the session on legal hold (or change its reason), with the ``events`` that
        report it written in the same transaction; False if there is no such session."""
        ...

    def clear_hold(self, partner_id: str, session_id: str, *, events: Sequence[Event] = ()) -> bool:
        """Lift the session's legal hold (with ``events``, as ``set_hold``)."""
        ...

    def mark_session_deleted(self, partner_id: str, session_id: str, deleted_ms: int) -> bool:
        """Record that the session's audio was erased (it takes no more)."""
        ...

    def set_recording_expiry(
        self, recording_id: str, expires_ms: int, retention_seconds: int | None, level: str
    ) -> None: ...

    def due_for_purge(self, now_ms: int, limit: int) -> Sequence[Recording]:
        """Finished recordings past their expiry whose session is not on legal hold."""
        ...

    def tombstone(
        self,
        recording: Recording,
        status: RecordingStatus,
        *,
        purged_ms: int,
        deleted_by: str | None = None,
        unless_held: bool = True,
        events: Sequence[Event | None] = (),
    ) -> bool:
        """Compare-and-set the recording to EXPIRED or DELETED with its tombstone fields, only
        if its session is not on legal hold at that moment (with ``unless_held``); ``events``
        are written in the same transaction when it changed."""
        ...

    def tombstone_many(
        self,
        erasures: Sequence[tuple[Recording, Sequence[Event | None]]],
        status: RecordingStatus,
        *,
        purged_ms: int,
        deleted_by: str | None = None,
        unless_held: bool = True,
    ) -> set[str]:
        """``tombstone`` for each (recording, its events), all in one transaction, each with
        its own conditions; the ids of those tombstoned."""
        ...

    def mark_removed_many(self, recording_ids: Collection[str], now_ms: int) -> None:
        """Record that the audio of these tombstones left storage."""
        ...

    def pending_removals(self, limit: int) -> Sequence[Recording]:
        """Tombstones whose audio is still to be removed from storage."""
        ...

    def cache_epoch(self) -> int:
        """A counter bumped by every change to what may be served."""
        ...

    def bump_cache_epoch(self) -> None: ...

    def get_merged(self, partner_id: str, session_id: str) -> Recording | None:
        """The session's merged rendition (sequence 0), if one was ever made."""
        ...

    def merged_renditions(self, sessions: Collection[tuple[str, str]]) -> Sequence[Recording]:
        """The merged renditions of these (partner id, session id) sessions, in one read."""
        ...

    def replace_merged(self, old: Recording | None, new: Recording, job: Job) -> bool:
        """Swap the merged rendition for a new one with its job, atomically; False if another
        actor replaced ``old`` first."""
        ...

    def add_job(self, job: Job) -> None: ...

    def lease_job(
        self, owner: str, now_ms: int, lease_ms: int, node: str | None = None
    ) -> Job | None:
        """Claim one job due by ``now_ms`` whose lease is free or lapsed by the database's
        clock and which is not reserved for another node than ``node`` (``Job.node``, until
        ``Job.node_until_ms`` when that is set); exactly one caller wins a race."""
        ...

    def renew_lease(self, job_id: str, owner: str, lease_ms: int) -> bool:
        """Extend the lease ``owner`` holds on a running job; False when it holds it no more."""
        ...

    def finish_job(self, job_id: str, now_ms: int, error: str | None = None) -> None: ...

    def retry_job(self, job_id: str, run_after_ms: int, error: str) -> None: ...

    def lease_owners(self) -> Sequence[str]:
        """Owners holding leases on unfinished jobs."""
        ...

    def release_leases(self, owner: str) -> int: ...

    def get_job(self, job_id: str) -> Job | None: ...

    def pending_jobs(self, recording_id: str) -> Sequence[Job]: ...

    def add_stream_ticket(
        self,
        ticket_hash: str,
        partner_id: str,
        session_id: str,
        provider_id: str | None,
        expires_ms: int,
    ) -> None: ...

    def consume_stream_ticket(
        self, ticket_hash: str, now_ms: int
    ) -> tuple[str, str, str | None] | None:
        """(partner_id, session_id, provider_id) once; None if unknown, used or expired."""
        ...

    def list_recordings(self, partner_id: str, session_id: str) -> Sequence[Recording]:
        """The session's recordings, ordered by sequence number."""
        ...

    def get_recording(self, recording_id: str) -> Recording | None: ...

    def list_signing_keys(self) -> Sequence[SigningKey]:
        """All keys that verify, newest first; the first one signs."""
        ...

    def add_signing_key(self, key: SigningKey) -> None: ...

    def remove_signing_key(self, key_id: str) -> bool: ...


class SequenceTaken(Exception):
    """Two uploads raced for the same sequence number; the loser retries with the next."""


class ChannelTaken(Exception):
    """The call channel already holds a recording that has not failed (the database enforces
    one a channel, so of concurrent uploads exactly one gets it)."""

    def __init__(self, session_id: str, channel: str) -> None:
        super().__init__(f"{session_id}: {channel}")
        self.channel = channel
