"""Finalization: turn an accepted upload or a closed stream into a stored, immutable WAV.

Runs in a worker (``ingest/worker.py``) from the job table. Decode or convert into a temporary
file, put it (and its waveform peaks, see core/peaks.py) in the object store, then flip the
recording to AVAILABLE with every audio fact computed from the stored file. An ``InvalidAudio``
is final (retrying cannot help): the recording ends FAILED with the reason. Anything else is
retried with backoff, and after ``MAX_ATTEMPTS`` the recording ends FAILED too. The source
file is removed only after the recording is AVAILABLE.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from tapevault.core import lifecycle
from tapevault.core.clock import now_ms
from tapevault.core.delivery import put_recording
from tapevault.core.lifecycle import TOMBSTONES
from tapevault.core.mergeplan import MERGE_PREFIX, inputs_digest, merge_inputs
from tapevault.core.model import MERGED_CHANNEL, Job, JobKind, Recording, RecordingStatus
from tapevault.core.vault import Vault
from tapevault.errors import InvalidAudio, QuotaExceeded, StoreUnavailable
from tapevault.fsutil import is_out_of_space
from tapevault.ingest.liveness import process_id
from tapevault.ingest.merge import MergeInput, merge_to_wav, sequential_starts
from tapevault.ingest.pcm import raw_to_wav
from tapevault.ingest.peaks import store_peaks
from tapevault.ingest.scratch import scratch_prefix

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


STREAM_PREFIX = "stream/"
OUT_OF_SPACE_RETRY_SECONDS = 60
STORE_RETRY_SECONDS = 30  # an unreachable object store: try again this often
TEMPORARY_KINDS = ("final", "merge")  # scratch_prefix kinds, for the sweep


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


class Finalizer:
    def __init__(self, vault: Vault, decode: Decoder, owner: str | None = None) -> None:
        self.vault = vault
        # Named into temporary files, so a sweep knows whether their writer still runs.
        self.owner = owner or process_id()
        self.decode = decode

    def run(self, job: Job) -> None:
        """Do one leased job, and record its outcome in the job table."""
        repo = self.vault.repo
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
            if is_out_of_space(exc):
                # A full disk is not the recording's fault and goes away when space is freed:
                # retry every minute for as long as it lasts (its partial output is removed
                # already), instead of failing an acknowledged upload after five quick tries.
                log.warning("finalizing %s: the disk is full; retrying", recording.recording_id)
                due = now_ms(self.vault.clock) + OUT_OF_SPACE_RETRY_SECONDS * 1000
                repo.retry_job(job.job_id, due, f"disk full: {reason}")
            elif isinstance(exc, StoreUnavailable):
                # The object store is down or unreachable: like a full disk, not the
                # recording's fault, so retried for as long as the outage lasts.
                log.warning(
                    "finalizing %s: the audio store is unreachable; retrying",
                    recording.recording_id,
                )
                due = now_ms(self.vault.clock) + STORE_RETRY_SECONDS * 1000
                repo.retry_job(job.job_id, due, f"store unavailable: {reason}")
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
            return vault.repo.update_recording(recording, expect=RecordingStatus.PROCESSING)
        written, queued = vault.repo.finish_recording(
            recording, expect=RecordingStatus.PROCESSING, plan=vault.merge_planner()
        )
        vault.merge_queued(queued)
        return written

    def _merge(self, rendition: Recording) -> None:
        """Mix the session's recordings into the rendition's file (see core/renditions.py)."""
        vault = self.vault
        session, recordings = vault.repo.get_session_with_recordings(
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
        fd, tmp_name = tempfile.mkstemp(
            prefix=scratch_prefix("merge", self.owner), suffix=".wav", dir=vault.work_dir
        )
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            with contextlib.ExitStack() as stack:
                paths = [stack.enter_context(vault.store.local_copy(r.storage_key)) for r in inputs]
                merged = merge_to_wav(
                    [MergeInput(path, start) for path, start in zip(paths, starts, strict=True)],
                    tmp,
                )
            stored = put_recording(vault.store, rendition, _chunks(tmp))
            store_peaks(vault.store, rendition.storage_key, tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
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
        current = self.vault.repo.get_recording(recording.recording_id)
        if current is None or current.status in TOMBSTONES:
            self.vault.discard_object(recording)

    def _fail(self, job: Job, recording: Recording, reason: str, *, bad_audio: bool) -> None:
        """End the recording FAILED. The received audio is deleted only when it is bad audio;
        after an operational failure (disk, database) it stays in the incoming area, so an
        operator can queue it again: an acknowledged upload is never thrown away for that."""
        self._settle(replace(recording, status=RecordingStatus.FAILED, failure_reason=reason))
        self.vault.repo.finish_job(job.job_id, now_ms(self.vault.clock), reason)
        if bad_audio:
            self._source(recording).unlink(missing_ok=True)

    def _source(self, recording: Recording) -> Path:
        if recording.source_format.startswith(STREAM_PREFIX):
            return self.vault.stream_path(recording.recording_id)
        return self.vault.incoming_path(recording.recording_id)

    def _finalize(self, recording: Recording) -> None:
        source = self._source(recording)
        if not source.exists():
            if not (recording.recovered and recording.source_format.startswith(STREAM_PREFIX)):
                raise InvalidAudio("the received audio is missing from the incoming area")
            source.touch()  # a recovered stream none of whose audio reached the disk: empty
        fd, tmp_name = tempfile.mkstemp(
            prefix=scratch_prefix("final", self.owner), suffix=".wav", dir=source.parent
        )
        os.close(fd)
        tmp = Path(tmp_name)
        try:
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
                tenant = self.vault.repo.get_tenant(recording.partner_id)
                room = None if tenant is None else self.vault.quotas.room(tenant)
                finished = (
                    self.decode(source, tmp) if room is None else self.decode(source, tmp, room)
                )
            if finished.frames == 0 and not recording.source_format.startswith(STREAM_PREFIX):
                raise InvalidAudio("the upload holds no audio samples")
            stored = put_recording(self.vault.store, recording, _chunks(tmp))
            if finished.frames:
                # From the file just written, while it is still here: no second read of the
                # stored copy. Never raises; a recording without peaks is still a recording.
                store_peaks(self.vault.store, recording.storage_key, tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
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
            source.unlink(missing_ok=True)
        else:
            self._drop_if_unwanted(recording)
