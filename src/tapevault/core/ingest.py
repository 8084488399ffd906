"""Ingest: uploads and live streams taken into the vault, up to their acknowledgement.

An upload is acknowledged once its bytes are in the object store and its recording and
finalization job are committed; a live stream once its bytes are fsynced in this node's spool
(``ingest/durable.py``) while its writer still holds the recording. The worker finishes both
(``ingest/finalize.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from ulid import ULID

from tapevault.core import policy
from tapevault.core.clock import Clock, now_ms
from tapevault.core.jobs import Jobs
from tapevault.core.lookup import channel_taken
from tapevault.core.model import (
    Job,
    JobKind,
    Recording,
    RecordingStatus,
    Session,
    SessionStatus,
    Tenant,
)
from tapevault.core.ports import ChannelTaken, NodeLocalFiles, ObjectStore, SequenceTaken
from tapevault.core.quota import Quotas
from tapevault.core.sessions import Sessions
from tapevault.core.sources import stream_key, upload_key
from tapevault.errors import Conflict
from tapevault.fsutil import out_of_space_as_507

log = logging.getLogger("tapevault.vault")


class IngestRepository(Protocol):
    def next_sequence_number(self, session_id: str) -> int: ...

    def add_recording(self, recording: Recording, job: Job | None = None) -> None: ...

    def update_session_status(
        self,
        partner_id: str,
        session_id: str,
        status: SessionStatus,
        ended_ms: int | None,
        *,
        if_status: SessionStatus | None = None,
    ) -> bool: ...

    def update_recording(
        self,
        recording: Recording,
        *,
        expect: RecordingStatus,
        writer_id: str | None = None,
        job: Job | None = None,
    ) -> bool: ...

    def take_over_stream(
        self, recording_id: str, writer_id: str | None, stale_ms: int | None, job: Job
    ) -> bool: ...

    def recordings_with_status(self, status: RecordingStatus) -> Sequence[Recording]: ...

    def database_now_ms(self) -> int: ...

    def heartbeat(self, writer_id: str) -> None: ...

    def streams_held_by(self, writer_id: str) -> set[str]: ...

    def bound_jobs(self) -> dict[str, int]: ...

    def unbind_jobs(self, node: str) -> int: ...

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
    ) -> tuple[str, str, str | None] | None: ...


class Ingest:
    def __init__(
        self,
        repo: IngestRepository,
        store: ObjectStore,
        clock: Clock,
        local: NodeLocalFiles,
        sessions: Sessions,
        quotas: Quotas,
        jobs: Jobs,
    ) -> None:
        self.repo = repo
        self.store = store
        self.clock = clock
        self.local = local  # this node's working files (storage/node_local.py)
        self.sessions = sessions
        self.quotas = quotas
        self.jobs = jobs

    # uploads ------------------------------------------------------------------------------

    def accept_upload(
        self,
        partner: Tenant,
        session_id: str,
        spooled: Path,
        source_format: str,
        *,
        channel: str | None = None,
        media_start_epoch_ms: int | None = None,
    ) -> Recording:
        """Take a validated, spooled upload into the vault: the acknowledgement point.

        The node-local body is promoted into the object store under ``incoming/`` (renamed into
        place on a local store, copied elsewhere), then the recording is inserted as PROCESSING
        together with its finalization job, in one transaction. From here on the upload
        survives a crash of the process and the loss of the node; any node's worker finishes
        it. A failure before the commit removes the incoming object again (an orphan left by a
        crash in between is swept: ``sweep_unrecorded``).
        """
        session = self.sessions.check_accepts_audio(partner, session_id)
        self.quotas.check(partner, self.local.size(spooled))
        recording_id = str(ULID())
        key = upload_key(recording_id)
        with out_of_space_as_507("the upload"):
            self.local.promote(spooled, key)
        try:
            recording = self._insert_recording(
                session=session,
                recording_id=recording_id,
                status=RecordingStatus.PROCESSING,
                source_format=source_format,
                tenant_retention=partner.retention_seconds,
                job=self.jobs.new_job(JobKind.FINALIZE, recording_id),
                channel=channel,
                media_start_epoch_ms=media_start_epoch_ms,
            )
            self._mark_in_progress(session)
        except BaseException:
            self._discard_source(key)
            raise
        self.jobs.waiting.set()
        return recording

    def _discard_source(self, key: str) -> None:
        try:
            self.store.delete(key)
        except Exception:
            log.warning("could not remove %s; the sweep will", key, exc_info=True)

    def _mark_in_progress(self, session: Session) -> None:
        # ``session`` was read before the insert: an end may have landed since, so the mark
        # applies only to a session still CREATED, or it would reopen an acknowledged end.
        if session.status is SessionStatus.CREATED:
            self.repo.update_session_status(
                session.partner_id,
                session.session_id,
                SessionStatus.IN_PROGRESS,
                None,
                if_status=SessionStatus.CREATED,
            )

    def _insert_recording(
        self,
        *,
        session: Session,
        recording_id: str,
        status: RecordingStatus,
        source_format: str,
        tenant_retention: int,
        job: Job | None = None,
        channel: str | None = None,
        media_start_epoch_ms: int | None = None,
        writer_id: str | None = None,
        audio: tuple[int, int, int] = (0, 0, 0),
        spool_node: str | None = None,
    ) -> Recording:
        expires, level = policy.retention_expiry(tenant_retention, session)
        for _attempt in range(20):
            now = now_ms(self.clock)
            recording = Recording(
                recording_id=recording_id,
                session_id=session.session_id,
                partner_id=session.partner_id,
                sequence_number=self.repo.next_sequence_number(session.session_id),
                status=status,
                storage_key=f"{session.partner_id}/{session.session_id}/{recording_id}.wav",
                sample_rate=audio[0],
                channels=audio[1],
                bits_per_sample=audio[2],
                duration_ms=0,
                size_bytes=0,
                sha256="",
                created_ms=now,
                expires_ms=expires,
                retention_policy=level,
                source_format=source_format,
                channel=channel,
                media_start_epoch_ms=media_start_epoch_ms,
                writer_id=writer_id,
                heartbeat_ms=now if writer_id else None,
                spool_node=spool_node,
            )
            try:
                self.repo.add_recording(recording, job)
            except SequenceTaken:
                continue  # a concurrent upload took this number; take the next one
            except ChannelTaken as exc:
                raise channel_taken(exc.channel) from None
            return recording
        raise Conflict("Too many concurrent uploads to this session; retry.")

    # live streams ---------------------------------------------------------------------------

    def open_stream(
        self,
        partner: Tenant,
        session_id: str,
        source_format: str,
        writer_id: str,
        *,
        sample_rate: int,
        channels: int,
        bits_per_sample: int,
        channel: str | None = None,
        media_start_epoch_ms: int | None = None,
    ) -> Recording:
        """Start a RECEIVING recording for a live stream; its bytes go to this node's
        ``stream_spool`` (acknowledged once fsynced there) until it is closed.

        The stream's own format (rate, channels, sample width) is stored at once: crash
        recovery needs it to cut the file to whole frames and finish it.
        """
        session = self.sessions.check_accepts_audio(partner, session_id)
        self.quotas.check(partner, 1)  # a stream's size is unknown: it needs room to start
        recording = self._insert_recording(
            session=session,
            recording_id=str(ULID()),
            status=RecordingStatus.RECEIVING,
            source_format=source_format,
            tenant_retention=partner.retention_seconds,
            channel=channel,
            media_start_epoch_ms=media_start_epoch_ms,
            writer_id=writer_id,
            audio=(sample_rate, channels, bits_per_sample),
            spool_node=self.local.node_id,
        )
        self._mark_in_progress(session)
        return recording

    def close_stream(self, recording: Recording) -> Recording:
        """The stream ended: promote its spool into the object store, then queue the recording
        for finalization, in one transaction (a close that fails halfway must not leave it
        PROCESSING with no job). The spool is copied, not moved, and removed only once the job
        is committed, so a close that fails is retried from it. A no-op when recovery took the
        recording over meanwhile (it queued the job then; the spool stays for it)."""
        closed = replace(
            recording, status=RecordingStatus.PROCESSING, writer_id=None, heartbeat_ms=None
        )
        spool = self.local.stream_spool(recording.recording_id)
        key = stream_key(recording.recording_id)
        with out_of_space_as_507("the stream"):
            try:
                self.local.promote(spool, key, keep=True)
            except FileNotFoundError:
                # No spool here: promoted by an earlier close, or nothing was ever acknowledged.
                if self.store.stat(key) is None:
                    self.store.put(key, [])
        if self.repo.update_recording(
            closed,
            expect=RecordingStatus.RECEIVING,
            writer_id=recording.writer_id,
            job=self.jobs.new_job(JobKind.FINALIZE, recording.recording_id),
        ):
            self.local.discard(spool)
            self.jobs.waiting.set()
        return closed

    def take_over_stream(
        self, recording: Recording, *, stale_seconds: int | None, spool_wait_seconds: int = 0
    ) -> bool:
        """Recovery: mark a RECEIVING recording ``recovered`` and queue it for finalization,
        if it is still held by the writer it was read with and, unless ``stale_seconds`` is
        None (its writer is known dead), that writer's lease lapsed that long ago.

        Only the node whose disk holds the spool can finalize every acknowledged byte, so the
        job is that node's alone for ``spool_wait_seconds``; after that any node may finalize
        it, from the copy of the stream in the object store (``core/streamparts.py``)."""
        job = self.jobs.new_job(JobKind.FINALIZE, recording.recording_id)
        if recording.spool_node is not None:
            until = now_ms(self.clock) + spool_wait_seconds * 1000
            job = replace(job, node=recording.spool_node, node_until_ms=until)
        taken = self.repo.take_over_stream(
            recording.recording_id,
            recording.writer_id,
            None if stale_seconds is None else stale_seconds * 1000,
            job,
        )
        if taken:
            self.jobs.waiting.set()
        return taken

    # what the live streams' transport asks of the database ---------------------------------

    def add_stream_ticket(
        self,
        ticket_hash: str,
        partner_id: str,
        session_id: str,
        provider_id: str | None,
        expires_ms: int,
    ) -> None:
        """A browser's single-use ticket for a session's stream (only its hash is kept)."""
        self.repo.add_stream_ticket(ticket_hash, partner_id, session_id, provider_id, expires_ms)

    def consume_stream_ticket(
        self, ticket_hash: str, now_ms: int
    ) -> tuple[str, str, str | None] | None:
        """(partner_id, session_id, provider_id) once; None if unknown, used or expired."""
        return self.repo.consume_stream_ticket(ticket_hash, now_ms)

    def heartbeat(self, writer_id: str) -> None:
        """Renew this writer's lease on its live streams (by the database's clock)."""
        self.repo.heartbeat(writer_id)

    def streams_held_by(self, writer_id: str) -> set[str]:
        """The live streams this writer still holds (its fencing check)."""
        return self.repo.streams_held_by(writer_id)

    def recordings_with_status(self, status: RecordingStatus) -> list[Recording]:
        """Every recording in ``status`` (recovery's RECEIVING ones, the peaks backfill's
        AVAILABLE ones)."""
        return list(self.repo.recordings_with_status(status))

    def database_now_ms(self) -> int:
        """The database's clock, the one every server reads for live streams' leases."""
        return self.repo.database_now_ms()

    # nodes ----------------------------------------------------------------------------------

    def jobs_waiting_for_nodes(self) -> dict[str, int]:
        """How many unfinished jobs wait for each node: recovered streams' finalizations
        reserved for the node holding their spool (``take_over_stream``)."""
        return self.repo.bound_jobs()

    def forget_node(self, node: str) -> int:
        """A node whose disk is gone for good: let any node finalize its recovered streams,
        from what the object store holds of them. Returns how many jobs were released."""
        released = self.repo.unbind_jobs(node)
        if released:
            self.jobs.waiting.set()
        return released
