"""Retention, legal holds and deletion: when audio goes, what keeps it, and what is left.

Retention is a hierarchy: the tenant's default (7 days unless set), overridden per session, then
per recording, always counted from the session's creation. Every recording carries the
resulting ``expires_ms`` and which level set it; changing an override recomputes them. The purge
(run by the worker) removes the audio of recordings past ``expires_ms`` and leaves a tombstone:
status ``expired``, when, and under which policy.

A legal hold on a session stops all of that: nothing of a held session is purged or deleted,
and its recordings stay served past their retention until the hold is lifted, when retention
resumes. Deletion erases a session's or a recording's audio at once (status ``deleted``, by
whom), and is refused while a hold is on.

Every change here is written to the access log *before* it is made, so the log can never miss a
deletion, a hold change or a purge; if the log cannot be written, nothing is changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from tapevault.core import events, policy
from tapevault.core.access import AccessEvent, AccessLog, Action, Actor
from tapevault.core.clock import now_ms
from tapevault.core.lifecycle import TOMBSTONES
from tapevault.core.lookup import MAX_ID, SESSION_NOT_FOUND
from tapevault.core.model import MERGED_CHANNEL, Recording, RecordingStatus, Session, Tenant
from tapevault.core.peaks import peaks_keys
from tapevault.core.sources import STREAM_FORMAT_PREFIX, stream_key, upload_key
from tapevault.core.streamparts import drop_stream_parts
from tapevault.core.vault import Vault
from tapevault.errors import Conflict, InvalidRequest, NotFound

log = logging.getLogger("tapevault.retention")

MAX_REASON = 1000
MAX_BY = 200
SYSTEM = Actor(kind="system", token_id="retention-purge")  # noqa: S106 - an id, not a secret
# Recordings a purge logs with one append and tombstones in one transaction: a batch pays one
# access-log commit and two database commits instead of three commits per recording, and stays
# small enough that a transaction holds its sessions' locks only briefly.
PURGE_BATCH = 200


@dataclass(frozen=True)
class PurgePace:
    """How hard the purge works: recordings a batch, and how long it rests after each batch, as
    a multiple of the time the batch took. The purge is background work; where the API's
    writes share one lock with it (SQLite: one writer for the whole database), small batches and
    a rest give them the lock between batches (BENCHMARKS.md: batches of 200 without rest made
    the API's p99 6× slower on SQLite while a large backlog was purged)."""

    batch: int = PURGE_BATCH
    rest: float = 0.0


SHARED_WRITER_PACE = PurgePace(batch=50, rest=1.0)


class RetentionCounts(Protocol):
    """Told of holds and purges as they happen: the metrics adapter (``tapevault.observe``)
    counts them; the core knows no metrics library."""

    def hold_changed(self, action: str) -> None:
        """``set`` (a hold put on, or its reason changed) or ``cleared``."""
        ...

    def purged(self, recordings: int) -> None: ...


class _NoCounts:
    def hold_changed(self, action: str) -> None:
        pass

    def purged(self, recordings: int) -> None:
        pass


class RetentionRepository(Protocol):
    """What retention reads and the bookkeeping it writes; the writes that change what may be
    served (tombstones, holds, expiries) go through ``ServingCache`` instead."""

    def get_recording(self, recording_id: str) -> Recording | None: ...

    def get_session(self, partner_id: str, session_id: str) -> Session | None: ...

    def list_sessions(self, partner_id: str) -> Sequence[Session]: ...

    def list_recordings(self, partner_id: str, session_id: str) -> Sequence[Recording]: ...

    def get_merged(self, partner_id: str, session_id: str) -> Recording | None: ...

    def due_for_purge(self, now_ms: int, limit: int) -> Sequence[Recording]: ...

    def pending_removals(self, limit: int) -> Sequence[Recording]: ...

    def merged_renditions(self, sessions: Collection[tuple[str, str]]) -> Sequence[Recording]: ...

    def mark_removed_many(self, recording_ids: Collection[str], now_ms: int) -> None: ...


class Retention:
    def __init__(
        self,
        vault: Vault,
        repo: RetentionRepository,
        audit: AccessLog,
        counts: RetentionCounts | None = None,
    ) -> None:
        self.vault = vault
        self.repo = repo
        self.audit = audit
        self.counts: RetentionCounts = counts or _NoCounts()
        self.pace = PurgePace()
        self.sleep: Callable[[float], None] = time.sleep

    # --- lookups, inside the tenant ---------------------------------------------------------

    def session(self, tenant: Tenant, session_id: str) -> Session:
        """A session of the tenant by id, or a call by its SID."""
        found = self.vault.sessions.find_session(tenant, session_id)
        if found is None:
            raise NotFound(SESSION_NOT_FOUND)
        return found

    def recording(self, tenant: Tenant, recording_id: str) -> Recording:
        found = self.repo.get_recording(recording_id) if len(recording_id) <= MAX_ID else None
        if found is None or found.partner_id != tenant.partner_id:
            raise NotFound("Recording not found.")
        return found

    # --- retention overrides ----------------------------------------------------------------

    def set_session_retention(
        self, tenant: Tenant, session_id: str, seconds: int | None, actor: Actor
    ) -> Session:
        """Override (or, with None, stop overriding) the tenant's retention for a session."""
        policy.check_retention(seconds)
        session = self.session(tenant, session_id)
        if session.deleted_ms is not None:
            raise Conflict("The session was deleted; its retention cannot change.")
        self._log(Action.RETENTION_SET, actor, session, None, level="session", seconds=seconds)
        with self.vault.cache.batch():  # one epoch bump for the lot
            self.vault.cache.set_session_retention(tenant.partner_id, session.session_id, seconds)
            session = replace(session, retention_seconds=seconds)
            recordings = self.repo.list_recordings(tenant.partner_id, session.session_id)
            self._recompute_rendition(
                session, [self._recompute(tenant, session, r) for r in recordings]
            )
        return session

    def set_recording_retention(
        self, tenant: Tenant, recording_id: str, seconds: int | None, actor: Actor
    ) -> Recording:
        policy.check_retention(seconds)
        recording = self.recording(tenant, recording_id)
        if recording.status in TOMBSTONES:
            # Its audio is erased (or being erased): no retention brings it back, and a 200
            # would tell an operator it is now kept.
            raise Conflict(
                f"The recording's audio was {recording.status.value}; its retention cannot change."
            )
        session = self.session(tenant, recording.session_id)
        self._log(
            Action.RETENTION_SET, actor, session, recording, level="recording", seconds=seconds
        )
        with self.vault.cache.batch():
            recording = self._recompute(
                tenant, session, replace(recording, retention_seconds=seconds)
            )
            self._recompute_rendition(
                session, self.repo.list_recordings(tenant.partner_id, session.session_id)
            )
        return recording

    def set_tenant_retention(self, tenant: Tenant, seconds: int, actor: Actor) -> int:
        """Change the tenant's default; every recording that follows it is recomputed."""
        policy.check_retention(seconds)
        self.audit.commit(
            AccessEvent(
                action=Action.RETENTION_SET,
                actor=actor,
                status=200,
                at_ms=now_ms(self.vault.clock),
                detail={"level": "tenant", "seconds": seconds},
            )
        )
        with self.vault.cache.batch():
            self.vault.cache.set_tenant_retention(tenant.partner_id, seconds)
            tenant = replace(tenant, retention_seconds=seconds)
            changed = 0
            for session in self.repo.list_sessions(tenant.partner_id):
                recordings = []
                for r in self.repo.list_recordings(tenant.partner_id, session.session_id):
                    if r.retention_seconds is None and session.retention_seconds is None:
                        recordings.append(self._recompute(tenant, session, r))
                        changed += 1
                    else:
                        recordings.append(r)
                self._recompute_rendition(session, recordings)
        return changed

    def _recompute(self, tenant: Tenant, session: Session, r: Recording) -> Recording:
        if r.status in TOMBSTONES:
            return r  # what is gone stays gone; its tombstone says when and why
        expires, level = policy.retention_expiry(
            tenant.retention_seconds, session, r.retention_seconds
        )
        self.vault.cache.set_recording_expiry(r.recording_id, expires, r.retention_seconds, level)
        return replace(r, expires_ms=expires, retention_policy=level)

    # --- legal hold -------------------------------------------------------------------------

    def hold(
        self, tenant: Tenant, session_id: str, *, reason: str, by: str | None, actor: Actor
    ) -> Session:
        """Put the session on legal hold (or change the reason of the hold it is under)."""
        if not reason.strip() or len(reason) > MAX_REASON or "\x00" in reason:
            raise InvalidRequest(f"A hold needs a reason of 1 to {MAX_REASON} characters.")
        if by is not None and (len(by) > MAX_BY or "\x00" in by):
            raise InvalidRequest(f"'by' is text of at most {MAX_BY} characters.")
        session = self.session(tenant, session_id)
        if session.deleted_ms is not None:
            # Its audio is erased already: a hold would promise to preserve nothing.
            raise Conflict("The session was deleted; nothing of it is left to hold.")
        holder = by or _describe(actor)
        self._log(Action.HOLD_SET, actor, session, None, reason=reason, by=holder)
        held_at = session.hold_set_ms or now_ms(self.vault.clock)
        self.vault.cache.set_hold(
            tenant.partner_id,
            session.session_id,
            reason=reason,
            by=holder,
            set_ms=held_at,
            # A changed reason is not a new hold: receivers hear of it being set, once.
            events=[] if session.held else [events.hold_changed(session, True, held_at)],
        )
        self.counts.hold_changed("set")
        return replace(session, hold_reason=reason, hold_by=holder, hold_set_ms=held_at)

    def release(self, tenant: Tenant, session_id: str, actor: Actor) -> Session:
        """Lift the hold; retention resumes (the next purge removes what is past it)."""
        session = self.session(tenant, session_id)
        if not session.held:
            return session
        self._log(Action.HOLD_CLEAR, actor, session, None, reason=session.hold_reason)
        self.vault.cache.clear_hold(
            tenant.partner_id,
            session.session_id,
            events=[events.hold_changed(session, False, now_ms(self.vault.clock))],
        )
        self.counts.hold_changed("cleared")
        return replace(session, hold_reason=None, hold_by=None, hold_set_ms=None)

    # --- deletion ---------------------------------------------------------------------------

    def delete_session(self, tenant: Tenant, session_id: str, actor: Actor) -> list[Recording]:
        """Erase every recording of the session now; refused under a legal hold or while a
        live stream is still writing to it."""
        session = self.session(tenant, session_id)
        self._refuse_if_held(session)
        recordings = self.repo.list_recordings(tenant.partner_id, session.session_id)
        merged = self.repo.get_merged(tenant.partner_id, session.session_id)
        if any(r.status is RecordingStatus.RECEIVING for r in recordings):
            raise Conflict("A live stream is still writing to this session; end it first.")
        doomed = live_recordings([*recordings, *([merged] if merged else [])])
        self._log(
            Action.SESSION_DELETE,
            actor,
            session,
            None,
            recordings=[r.recording_id for r in doomed],
        )
        by = _describe(actor)
        with self.vault.cache.batch():
            erased = [self._erase(r, RecordingStatus.DELETED, by, refuse_held=True) for r in doomed]
            now = now_ms(self.vault.clock)
            self.vault.cache.mark_session_deleted(tenant.partner_id, session.session_id, now)
        return erased

    def delete_recording(self, tenant: Tenant, recording_id: str, actor: Actor) -> Recording:
        recording = self.recording(tenant, recording_id)
        session = self.session(tenant, recording.session_id)
        self._refuse_if_held(session)
        if recording.status is RecordingStatus.RECEIVING:
            raise Conflict("This recording is still being streamed; end the stream first.")
        if recording.status in TOMBSTONES:
            return recording
        self._log(Action.RECORDING_DELETE, actor, session, recording)
        by = _describe(actor)
        with self.vault.cache.batch():
            erased = self._erase(recording, RecordingStatus.DELETED, by, refuse_held=True)
            self._retire_renditions([recording], RecordingStatus.DELETED, by)
        return erased

    @staticmethod
    def _refuse_if_held(session: Session) -> None:
        if session.held:
            raise Conflict(
                f"The session is under legal hold ({session.hold_reason}); "
                "lift the hold before deleting anything of it."
            )

    # --- purge ------------------------------------------------------------------------------

    def purge_due(self, limit: int = 500) -> int:
        """Remove the audio of recordings past retention (none of a held session); returns how
        many. Each purge is logged first; if the log cannot be written, purging stops. Audio
        that a crash left behind under a tombstone is removed first. Done in batches
        (``pace``): a batch's records are made durable together before any of its
        recordings is erased, then its tombstones are written in one transaction."""
        self.finish_removals(limit)
        purged = 0
        now = now_ms(self.vault.clock)
        due = self.repo.due_for_purge(now, limit)
        size, rest = self.pace.batch, self.pace.rest
        for start in range(0, len(due), size):
            began = time.monotonic()
            # One cache-epoch bump a batch: other processes learn of its tombstones before
            # the rest (not after the whole pass).
            with self.vault.cache.batch():
                purged += self._purge_batch(due[start : start + size], now)
            if rest > 0:
                self.sleep(rest * (time.monotonic() - began))
        if purged:
            log.info("purged the audio of %d recording(s) past retention", purged)
        return purged

    def finish_removals(self, limit: int = 500) -> int:
        """Remove the audio of tombstones whose removal a crash interrupted."""
        pending = self.repo.pending_removals(limit)
        self._remove_audio(pending)
        return len(pending)

    def _purge_batch(self, batch: Sequence[Recording], now: int) -> int:
        """Log, tombstone and remove one batch of due recordings; how many ended expired."""
        expired = RecordingStatus.EXPIRED
        self.audit.commit_many([_purge_event(r, now) for r in batch])  # raises: nothing erased
        done = self.vault.cache.tombstone_many(
            [(r, [events.recording_erased(r, expired, now)]) for r in batch],
            expired,
            purged_ms=now,
        )
        tombstoned = [_tombstoned(r, expired, now, None) for r in batch if r.recording_id in done]
        if tombstoned:  # counted now: a later failure must not lose what was done
            self.counts.purged(len(tombstoned))
        self._remove_audio(tombstoned)
        gone = list(tombstoned)
        # The others changed since the due query (a hold, a worker, another purger): one at a
        # time, as a deletion does; ``_erase`` re-reads, yields to a hold, follows a move.
        # Counted only when this purge tombstoned it: one another purger (or this batch's
        # retiring of a rendition) got first is neither counted again nor retired again.
        for r in batch:
            if r.recording_id not in done and self._tombstone(r, expired, None)[1]:
                self.counts.purged(1)
                gone.append(r)
        # A rendition retired here is purged with its inputs: counted too (once: one this
        # batch or an earlier one tombstoned is not retired again, and not counted when due).
        retired = self._retire_renditions(gone, expired, None)
        if retired:
            self.counts.purged(retired)
        return len(gone) + retired

    # --- helpers ----------------------------------------------------------------------------

    def _erase(
        self, r: Recording, status: RecordingStatus, by: str | None, *, refuse_held: bool = False
    ) -> Recording:
        """Tombstone the recording, then remove its audio (stored file and any received
        leftovers). The tombstone comes first, in one statement that also checks the session is
        not held at that moment, so a hold acknowledged meanwhile always wins and a crash can
        only leave audio that is no longer served (``finish_removals`` takes it away). Returns
        the recording as it ends: tombstoned, or unchanged when a hold stopped it."""
        return self._tombstone(r, status, by, refuse_held=refuse_held)[0]

    def _tombstone(
        self, r: Recording, status: RecordingStatus, by: str | None, *, refuse_held: bool = False
    ) -> tuple[Recording, bool]:
        """``_erase``, and whether this call wrote the tombstone (False: a hold stopped it, it
        was gone already, or it kept changing)."""
        repo = self.repo
        now = now_ms(self.vault.clock)
        current: Recording | None = r
        for _attempt in range(3):
            if current is None or current.status in TOMBSTONES:
                return current or r, False  # gone already: another actor got there first
            erased = events.recording_erased(current, status, now)
            if self.vault.cache.tombstone(
                current, status, purged_ms=now, deleted_by=by, events=[erased]
            ):
                break
            session = repo.get_session(r.partner_id, r.session_id)
            if session is not None and session.held:
                if refuse_held:
                    raise Conflict(
                        "A legal hold was set on the session meanwhile; nothing more of it "
                        "was deleted."
                    )
                return r, False  # the purge yields to the hold
            # It moved on (a worker finished it): tombstone what it is now.
            current = repo.get_recording(r.recording_id)
        else:
            return r, False
        tombstoned = _tombstoned(current, status, now, by)
        self._remove_audio([tombstoned])
        return tombstoned, True

    def _remove_audio(self, gone: Sequence[Recording]) -> None:
        """Delete the audio of tombstones, then mark them removed in one statement (a crash in
        between leaves them pending: ``finish_removals`` deletes again, which is harmless)."""
        for r in gone:
            self._delete_audio(r)
        if gone:
            self.repo.mark_removed_many([r.recording_id for r in gone], now_ms(self.vault.clock))

    def _delete_audio(self, r: Recording) -> None:
        vault = self.vault
        vault.store.delete(r.storage_key)
        for key in peaks_keys(r.storage_key):  # derived from the audio: they go with it
            vault.store.delete(key)
        # Received audio not finalized yet (or kept after a failure) goes too, wherever it is.
        vault.store.delete(upload_key(r.recording_id))
        vault.store.delete(stream_key(r.recording_id))
        if r.source_format.startswith(STREAM_FORMAT_PREFIX):  # its copy taken while live
            drop_stream_parts(vault.store, r.recording_id)
        vault.local.discard(vault.local.stream_spool(r.recording_id))

    def _retire_renditions(
        self, gone: Sequence[Recording], status: RecordingStatus, by: str | None
    ) -> int:
        """A merged rendition holds the audio of its inputs: when one of them is deleted or
        purged, the rendition goes too (a new one is made from what is left, on request). One
        read for the whole batch finds the sessions that have one. How many this tombstoned."""
        sessions = {(r.partner_id, r.session_id) for r in gone if r.channel != MERGED_CHANNEL}
        if not sessions:
            return 0
        retired = 0
        for merged in self.repo.merged_renditions(sessions):
            if merged.status not in TOMBSTONES and self._tombstone(merged, status, by)[1]:
                retired += 1
        return retired

    def _recompute_rendition(self, session: Session, recordings: Sequence[Recording]) -> None:
        """A rendition expires with the first of its inputs: after a retention change, its
        expiry follows theirs (``recordings``: the session's, as they are now)."""
        repo = self.repo
        merged = repo.get_merged(session.partner_id, session.session_id)
        if merged is None or merged.status in TOMBSTONES:
            return
        inputs = live_recordings(recordings)
        if inputs:
            expires = min(r.expires_ms for r in inputs)
            self.vault.cache.set_recording_expiry(merged.recording_id, expires, None, "inputs")

    def _log(
        self,
        action: Action,
        actor: Actor,
        session: Session,
        recording: Recording | None,
        **detail: object,
    ) -> None:
        self.audit.commit(
            AccessEvent(
                action=action,
                actor=actor,
                status=200,
                at_ms=now_ms(self.vault.clock),
                session_id=session.session_id,
                recording_id=recording.recording_id if recording else None,
                detail=detail,
            )
        )


def _purge_event(r: Recording, now: int) -> AccessEvent:
    """The access record of one recording's purge, written before it is tombstoned."""
    return AccessEvent(
        action=Action.RETENTION_PURGE,
        actor=replace(SYSTEM, partner_id=r.partner_id),
        status=200,
        at_ms=now,
        session_id=r.session_id,
        recording_id=r.recording_id,
        detail={"policy": r.retention_policy or "tenant", "expired_at_ms": r.expires_ms},
    )


def _tombstoned(r: Recording, status: RecordingStatus, now: int, by: str | None) -> Recording:
    """The recording as its tombstone (written by the repository) leaves it."""
    return replace(
        r,
        status=status,
        purged_ms=now,
        purge_reason="deleted" if status is RecordingStatus.DELETED else "expired",
        deleted_by=by,
    )


def _describe(actor: Actor) -> str:
    """Who, as a tombstone or hold records it: the credential, never a secret."""
    return f"{actor.kind or 'unknown'}:{actor.token_id or '-'}"[:MAX_BY]


def live_recordings(recordings: Sequence[Recording]) -> list[Recording]:
    return [r for r in recordings if r.status not in TOMBSTONES]
