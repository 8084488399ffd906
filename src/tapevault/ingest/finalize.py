"""Finalization: turn an accepted upload or a closed stream into a stored, immutable WAV.

Runs in a worker (``ingest/worker.py``) from the job table, on any node: the received audio is
read back from the object store (``incoming/``, see core/sources.py) through ``LocalCopy``,
decoded or converted into a node-local temporary file (``storage/node_local.py``), and that is
put (with its waveform peaks, see core/peaks.py) in the object store; then the recording flips
to AVAILABLE with every audio fact computed from the stored file. An ``InvalidAudio``
is final (retrying cannot help): the recording ends FAILED with the reason. Anything else is
retried with backoff, and after ``MAX_ATTEMPTS`` the recording ends FAILED too. The incoming
object is removed only after the recording is AVAILABLE.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from tapevault.core import events, lifecycle
from tapevault.core.clock import now_ms
from tapevault.core.delivery import put_recording
from tapevault.core.lifecycle import TOMBSTONES
from tapevault.core.mergeplan import MERGE_PREFIX, inputs_digest, merge_inputs
from tapevault.core.model import (
    MERGED_CHANNEL,
    Job,
    JobKind,
    Recording,
    RecordingStatus,
    Session,
    Tenant,
)
from tapevault.core.ports import Announcer, LocalCopy, MergePlanner, MergeQueued
from tapevault.core.sources import STREAM_FORMAT_PREFIX, source_key
from tapevault.core.streamparts import Part, drop_stream_parts, stored_bytes, stored_parts
from tapevault.core.vault import Vault
from tapevault.errors import InvalidAudio, QuotaExceeded, Unavailable
from tapevault.fsutil import is_out_of_space
from tapevault.ingest.merge import MergeInput, merge_to_wav, sequential_starts
from tapevault.ingest.pcm import raw_to_wav
from tapevault.ingest.peaks import store_peaks
from tapevault.storage.node_local import NodeLocalDisk, read_chunks

log = logging.getLogger("tapevault.finalize")


@dataclass(frozen=True, slots=True)
class Finished:
    """What a decoder wrote: a canonical PCM WAV and its facts."""

    sample_rate: int
    channels: int
    bits_per_sample: int
    frames: int
    size: int
    sha256: str
    source_format: str


class Decoder(Protocol):
    """``decode(src, dst[, quota])``: ``quota`` (the tenant's quota and bytes stored) is passed
    only when the tenant has one, so a plain ``decode(src, dst)`` serves tenants without."""

    def __call__(
        self, src: Path, dst: Path, quota: tuple[int, int] | None = None, /
    ) -> Finished: ...


STREAM_PREFIX = STREAM_FORMAT_PREFIX


def _parts_chunks(store: LocalCopy, parts: list[Part]) -> Iterator[bytes]:
    """The parts' bytes in order, one part on this node's disk at a time."""
    for part in parts:
        with store.local_copy(part.key) as path:
            chunks = read_chunks(path)
            got = 0
            for chunk in chunks:
                got += len(chunk)
                yield chunk
            if got != part.size:  # replaced or removed between the walk and the read
                raise OSError(errno.EIO, f"{part.key} changed while it was read")


OUT_OF_SPACE_RETRY_SECONDS = 60
STORE_RETRY_SECONDS = 30  # an unreachable object store: try again this often
TEMPORARY_KINDS = ("final", "merge")  # scratch_prefix kinds, for the sweep


class JobRepository(Protocol):
    """What the worker asks of the database: jobs, the recordings they finish, and the state
    changes (with the merge they may queue) finishing them makes."""

    def lease_job(
        self, owner: str, now_ms: int, lease_ms: int, node: str | None = None
    ) -> Job | None: ...

    def renew_lease(self, job_id: str, owner: str, lease_ms: int) -> bool: ...

    def lease_owners(self) -> Sequence[str]: ...

    def release_leases(self, owner: str) -> int: ...

    def finish_job(self, job_id: str, now_ms: int, error: str | None = None) -> None: ...

    def retry_job(self, job_id: str, run_after_ms: int, error: str) -> None: ...

    def get_recording(self, recording_id: str) -> Recording | None: ...

    def get_tenant(self, partner_id: str) -> Tenant | None: ...

    def get_session_with_recordings(
        self, partner_id: str, session_id: str
    ) -> tuple[Session | None, Sequence[Recording]]: ...

    def update_recording(
        self,
        recording: Recording,
        *,
        expect: RecordingStatus,
        writer_id: str | None = None,
        job: Job | None = None,
    ) -> bool: ...

    def finish_recording(
        self,
        recording: Recording,
        *,
        expect: RecordingStatus,
        plan: MergePlanner,
        announce: Announcer | None = None,
    ) -> tuple[bool, MergeQueued | None]: ...


class Finalizer:
    def __init__(
        self, vault: Vault, repo: JobRepository, decode: Decoder, local: NodeLocalDisk
    ) -> None:
        self.vault = vault
        self.repo = repo
        # This node's working files: temporaries named after their writer, so that a sweep
        # knows whether it still runs; a live stream's spool, for a recovered stream.
        self.local = local
        self.decode = decode

    def lease(self, owner: str, lease_ms: int = lifecycle.LEASE_SECONDS * 1000) -> Job | None:
        """Claim one due job for ``owner`` (exactly one caller wins a race), for ``lease_ms``
        by the database's clock: any node's unreserved jobs, and those reserved for this node
        (a recovered stream whose spool is on its disk, ``Job.node``)."""
        return self.repo.lease_job(owner, now_ms(self.vault.clock), lease_ms, self.local.node_id)

    def renew_lease(self, job_id: str, owner: str, lease_ms: int) -> bool:
        """Extend ``owner``'s lease on a job it still runs; False when it holds it no more."""
        return self.repo.renew_lease(job_id, owner, lease_ms)

    def lease_owners(self) -> Sequence[str]:
        """Owners holding leases on unfinished jobs."""
        return self.repo.lease_owners()

    def release_leases(self, owner: str) -> int:
        """Free the jobs ``owner`` leased (a process known to be gone)."""
        return self.repo.release_leases(owner)

    def run(self, job: Job) -> None:
        """Do one leased job, and record its outcome in the job table."""
        repo = self.repo
        recording = repo.get_recording(job.recording_id)
        if recording is None or recording.status is not RecordingStatus.PROCESSING:
            repo.finish_job(job.job_id, now_ms(self.vault.clock), "recording not processing")
            return
        try:
            if job.kind is JobKind.MERGE:
                self._merge(recording)
            else:
                self._finalize(recording)
        except InvalidAudio as exc:
            self._fail(job, recording, exc.message, bad_audio=True)
        except QuotaExceeded as exc:
            # Final (decoding again cannot shrink it), but the received audio is kept: an
            # operator who raises the quota can queue it again.
            self._fail(job, recording, exc.message, bad_audio=False)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, Unavailable):
                # The object store (StoreUnavailable) or the database is down: like a full
                # disk, not the recording's fault and over once it is back. Retried for as long
                # as it lasts, never failing an acknowledged upload for it.
                log.warning("finalizing %s: %s; retrying", recording.recording_id, exc.message)
                due = now_ms(self.vault.clock) + STORE_RETRY_SECONDS * 1000
                repo.retry_job(job.job_id, due, f"store unavailable: {reason}")
            elif is_out_of_space(exc):
                # A full disk is not the recording's fault and goes away when space is freed:
                # retry every minute for as long as it lasts (its partial output is removed
                # already), instead of failing an acknowledged upload after five quick tries.
                log.warning("finalizing %s: the disk is full; retrying", recording.recording_id)
                due = now_ms(self.vault.clock) + OUT_OF_SPACE_RETRY_SECONDS * 1000
                repo.retry_job(job.job_id, due, f"disk full: {reason}")
            elif job.attempts >= lifecycle.MAX_ATTEMPTS:
                log.exception("finalizing %s failed for good", recording.recording_id)
                self._fail(
                    job,
                    recording,
                    f"gave up after {job.attempts} attempts: {reason}",
                    bad_audio=False,
                )
            else:
                log.warning("finalizing %s failed, will retry: %s", recording.recording_id, reason)
                delay = lifecycle.retry_delay_seconds(job.attempts)
                repo.retry_job(job.job_id, now_ms(self.vault.clock) + delay * 1000, reason)
        else:
            repo.finish_job(job.job_id, now_ms(self.vault.clock))

    def _settle(self, recording: Recording) -> bool:
        """Write a recording's final state (available or failed); in the same transaction,
        queue its session's merged rendition when this was the last of its audio to finish
        (see core/mergeplan.py). False when the row had moved on (deleted meanwhile)."""
        vault = self.vault
        if recording.channel == MERGED_CHANNEL:
            return self.repo.update_recording(recording, expect=RecordingStatus.PROCESSING)
        at = now_ms(vault.clock)
        written, queued = self.repo.finish_recording(
            recording,
            expect=RecordingStatus.PROCESSING,
            plan=vault.jobs.merge_planner(),
            # Written only now, after the audio was stored: "available" means readable.
            announce=lambda session, recordings: [
                events.recording_finished(recording, at),
                events.session_settled(session, recordings, at),
            ],
        )
        vault.jobs.merge_queued(queued)
        return written

    def _merge(self, rendition: Recording) -> None:
        """Mix the session's recordings into the rendition's file (see core/renditions.py)."""
        vault = self.vault
        session, recordings = self.repo.get_session_with_recordings(
            rendition.partner_id, rendition.session_id
        )
        held = session is not None and session.held
        inputs = merge_inputs(recordings, now_ms(vault.clock), held)
        if not inputs or MERGE_PREFIX + inputs_digest(inputs) != rendition.source_format:
            raise InvalidAudio("the session's audio changed during the merge; a new one is due")
        if all(r.media_start_epoch_ms is not None for r in inputs):
            base = min(r.media_start_epoch_ms or 0 for r in inputs)
            starts = [(r.media_start_epoch_ms or 0) - base for r in inputs]
        else:
            starts = sequential_starts([r.duration_ms for r in inputs])
        with self.local.temporary("merge", ".wav") as tmp:
            with contextlib.ExitStack() as stack:
                paths = [stack.enter_context(vault.store.local_copy(r.storage_key)) for r in inputs]
                merged = merge_to_wav(
                    [MergeInput(path, start) for path, start in zip(paths, starts, strict=True)],
                    tmp,
                )
            stored = put_recording(vault.store, rendition, read_chunks(tmp))
            store_peaks(vault.store, rendition.storage_key, tmp)
        finished_ok = self._settle(
            replace(
                rendition,
                status=RecordingStatus.AVAILABLE,
                sample_rate=merged.sample_rate,
                channels=merged.channels,
                bits_per_sample=merged.bits_per_sample,
                duration_ms=round(merged.frames * 1000 / merged.sample_rate),
                size_bytes=stored.size,
                sha256=merged.sha256,
                failure_reason=None,
            )
        )
        if not finished_ok:
            self._drop_if_unwanted(rendition)

    def _drop_if_unwanted(self, recording: Recording) -> None:
        """The file was stored but the row moved on meanwhile. If it was deleted (or replaced
        and removed, for a rendition), nobody may keep its audio: remove the file. If another
        worker finished it, the file is that worker's result too (same key): leave it."""
        current = self.repo.get_recording(recording.recording_id)
        if current is None or current.status in TOMBSTONES:
            self.vault.jobs.discard_object(recording)

    def _fail(self, job: Job, recording: Recording, reason: str, *, bad_audio: bool) -> None:
        """End the recording FAILED. The received audio is deleted only when it is bad audio;
        after an operational failure (disk, database) it stays in the incoming area, so an
        operator can queue it again: an acknowledged upload is never thrown away for that."""
        self._settle(replace(recording, status=RecordingStatus.FAILED, failure_reason=reason))
        self.repo.finish_job(job.job_id, now_ms(self.vault.clock), reason)
        if bad_audio:
            self._drop_source(recording)

    def _drop_source(self, recording: Recording) -> None:
        self.vault.store.delete(source_key(recording))
        if recording.source_format.startswith(STREAM_PREFIX):
            drop_stream_parts(self.vault.store, recording.recording_id)
        self.local.discard(self.local.stream_spool(recording.recording_id))

    def _stage_source(self, recording: Recording) -> str:
        """The incoming object to finalize ``recording`` from. A stream taken over by recovery
        was never closed (nor was one closed by a version that kept streams on the node), so
        its spool is promoted here first, when this node has it. A node that does not (its
        job was reserved for the spool's node, ``Job.node``, until that one was given up for
        lost) finalizes what the store holds of the stream: the chain of parts copied while
        it was live (``core/streamparts.py``), exactly the count its last acks called stored."""
        key = source_key(recording)
        store = self.vault.store
        if store.stat(key) is not None:
            return key
        if recording.source_format.startswith(STREAM_PREFIX):
            spool = self.local.stream_spool(recording.recording_id)
            try:
                self.local.promote(spool, key, keep=True)
            except FileNotFoundError:
                parts = stored_parts(store, recording.recording_id)
                if parts:
                    log.warning(
                        "finalizing stream %s from its copy in the store (%d bytes): its "
                        "spool is not on this node",
                        recording.recording_id,
                        stored_bytes(parts),
                    )
                    store.put(key, _parts_chunks(store, parts))
                elif not recording.recovered:
                    raise InvalidAudio(
                        "the received audio is missing from the incoming area"
                    ) from None
                else:
                    store.put(key, [])  # a recovered stream none of whose audio reached a disk
            return key
        raise InvalidAudio("the received audio is missing from the incoming area")

    def _finalize(self, recording: Recording) -> None:
        key = self._stage_source(recording)
        with (
            self.vault.store.local_copy(key) as source,
            self.local.temporary("final", ".wav") as tmp,
        ):
            if recording.source_format.startswith(STREAM_PREFIX):
                facts = raw_to_wav(
                    source,
                    tmp,
                    encoding=recording.source_format.removeprefix(STREAM_PREFIX),
                    sample_rate=recording.sample_rate,
                    channels=recording.channels,
                )
                finished = Finished(
                    facts.fmt.sample_rate,
                    facts.fmt.channels,
                    16,
                    facts.frames,
                    facts.size,
                    facts.sha256,
                    recording.source_format,
                )
            else:
                tenant = self.repo.get_tenant(recording.partner_id)
                room = None if tenant is None else self.vault.quotas.room(tenant)
                finished = (
                    self.decode(source, tmp) if room is None else self.decode(source, tmp, room)
                )
            if finished.frames == 0 and not recording.source_format.startswith(STREAM_PREFIX):
                raise InvalidAudio("the upload holds no audio samples")
            stored = put_recording(self.vault.store, recording, read_chunks(tmp))
            if finished.frames:
                # From the file just written, while it is still here: no second read of the
                # stored copy. Never raises; a recording without peaks is still a recording.
                store_peaks(self.vault.store, recording.storage_key, tmp)
        duration_ms = (
            round(finished.frames * 1000 / finished.sample_rate) if finished.sample_rate else 0
        )
        finished_ok = self._settle(
            replace(
                recording,
                status=RecordingStatus.AVAILABLE,
                sample_rate=finished.sample_rate,
                channels=finished.channels,
                bits_per_sample=finished.bits_per_sample,
                duration_ms=duration_ms,
                size_bytes=stored.size,
                sha256=finished.sha256,
                source_format=finished.source_format or recording.source_format,
                failure_reason=None,
            )
        )
        if finished_ok:
            self._drop_source(recording)
        else:
            self._drop_if_unwanted(recording)
