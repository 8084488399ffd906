"""What the media hot path reads, cached in one place that invalidates itself.

A finished recording, and an ended session whose recordings are all finalized, never change
again except by retention, a legal hold or a deletion. So players asking for fresh URLs, and every
ranged read of a playback after the first, are answered from memory. Those changes are made
*through this cache* (its typed writes), which drops what it holds at once and bumps the
database's cache epoch, so every other process drops its own within ``check_seconds``. No caller
has to remember to invalidate anything; a write that changes what may be served and does not go
through here is a bug, and ``Repository`` writers outside it are only given the narrow protocols
that lack those writes.

Entries also live a few seconds at most, so a change this cache never saw (another process with
an older build) is seen soon; retention is computed per request from ``expires_ms`` anyway.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from tapevault.core.events import Event
from tapevault.core.lifecycle import PENDING
from tapevault.core.model import Recording, RecordingStatus, Session, SessionStatus

ENTRY_SECONDS = 5.0
MAX_ENTRIES = 50_000
EPOCH_CHECK_SECONDS = 1.0


class ServingRepository(Protocol):
    """The reads this cache serves and the writes that change what may be served."""

    def get_recording(self, recording_id: str) -> Recording | None: ...

    def get_session_with_recordings(
        self, partner_id: str, session_id: str
    ) -> tuple[Session | None, Sequence[Recording]]: ...

    def cache_epoch(self) -> int: ...

    def bump_cache_epoch(self) -> None: ...

    def set_tenant_retention(self, partner_id: str, seconds: int) -> None: ...

    def set_session_retention(
        self, partner_id: str, session_id: str, seconds: int | None
    ) -> bool: ...

    def set_hold(
        self,
        partner_id: str,
        session_id: str,
        *,
        reason: str,
        by: str,
        set_ms: int,
        events: Sequence[Event] = (),
    ) -> bool: ...

    def clear_hold(
        self, partner_id: str, session_id: str, *, events: Sequence[Event] = ()
    ) -> bool: ...

    def mark_session_deleted(self, partner_id: str, session_id: str, deleted_ms: int) -> bool: ...

    def set_recording_expiry(
        self, recording_id: str, expires_ms: int, retention_seconds: int | None, level: str
    ) -> None: ...

    def tombstone_many(
        self,
        erasures: Sequence[tuple[Recording, Sequence[Event | None]]],
        status: RecordingStatus,
        *,
        purged_ms: int,
        deleted_by: str | None = None,
        unless_held: bool = True,
    ) -> set[str]: ...


class ServingCache:
    """Read-through cache of servable recordings and settled sessions, with the writes that
    invalidate it. ``generation`` grows with every invalidation, so what is derived from
    cached state elsewhere (the URL memo of ``core.links``) knows when to drop itself."""

    def __init__(
        self,
        repo: ServingRepository,
        *,
        entry_seconds: float = ENTRY_SECONDS,
        check_seconds: float = EPOCH_CHECK_SECONDS,
    ) -> None:
        self._repo = repo
        self.entry_seconds = entry_seconds
        self.check_seconds = check_seconds
        self.generation = 0
        self._generations = itertools.count(1)  # next() is atomic: no two forgets share one
        self._recordings: dict[str, tuple[Recording, float]] = {}
        self._sessions: dict[tuple[str, str], tuple[Session, Sequence[Recording], float]] = {}
        self._lock = threading.Lock()  # one epoch check at a time
        self._entries = threading.Lock()  # a check-and-keep against a forget
        self._epoch = repo.cache_epoch()
        self._checked = time.monotonic()
        self._thread = threading.local()  # this thread's batch depth (see ``batch``)

    # --- reads ------------------------------------------------------------------------------

    def servable_recording(self, recording_id: str) -> Recording | None:
        """The recording; from memory when it was servable a moment ago (only servable rows
        are kept: a deletion or purge moves a row out of that state, and invalidates)."""
        now = self._fresh()
        hit = self._recordings.get(recording_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        generation = self.generation
        recording = self._repo.get_recording(recording_id)
        if recording is not None and recording.is_servable:
            with self._entries:
                # Not kept when a write invalidated meanwhile: the row read may predate it.
                if generation == self.generation:
                    if len(self._recordings) >= MAX_ENTRIES:
                        self._recordings.clear()
                    self._recordings[recording_id] = (recording, now + self.entry_seconds)
        return recording

    def settled_session(
        self, partner_id: str, session_id: str
    ) -> tuple[Session | None, Sequence[Recording]]:
        """The session and its recordings; from memory once they can no longer change (ended,
        and every recording finalized: available or failed)."""
        now = self._fresh()
        key = (partner_id, session_id)
        hit = self._sessions.get(key)
        if hit is not None and hit[2] > now:
            return hit[0], hit[1]
        generation = self.generation
        session, recordings = self._repo.get_session_with_recordings(partner_id, session_id)
        if (
            session is not None
            and session.status is SessionStatus.COMPLETED
            and not any(r.status in PENDING for r in recordings)
        ):
            with self._entries:
                if generation == self.generation:
                    if len(self._sessions) >= MAX_ENTRIES:
                        self._sessions.clear()
                    self._sessions[key] = (session, recordings, now + self.entry_seconds)
        return session, recordings

    # --- writes that change what may be served ----------------------------------------------

    def set_tenant_retention(self, partner_id: str, seconds: int) -> None:
        # A tenant write moves the epoch (and notifies) in its own transaction already
        # (db/repository.py ``_changed``): only this process's entries are left to drop.
        self._repo.set_tenant_retention(partner_id, seconds)
        self.forget()

    def set_session_retention(self, partner_id: str, session_id: str, seconds: int | None) -> bool:
        changed = self._repo.set_session_retention(partner_id, session_id, seconds)
        return self._wrote(changed)

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
        changed = self._repo.set_hold(
            partner_id, session_id, reason=reason, by=by, set_ms=set_ms, events=events
        )
        return self._wrote(changed)

    def clear_hold(self, partner_id: str, session_id: str, *, events: Sequence[Event] = ()) -> bool:
        changed = self._repo.clear_hold(partner_id, session_id, events=events)
        return self._wrote(changed)

    def mark_session_deleted(self, partner_id: str, session_id: str, deleted_ms: int) -> bool:
        changed = self._repo.mark_session_deleted(partner_id, session_id, deleted_ms)
        return self._wrote(changed)

    def set_recording_expiry(
        self, recording_id: str, expires_ms: int, retention_seconds: int | None, level: str
    ) -> None:
        self._repo.set_recording_expiry(recording_id, expires_ms, retention_seconds, level)
        self._wrote()

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
        """One recording's tombstone: a batch of one (the same statement and conditions)."""
        done = self.tombstone_many(
            [(recording, events)],
            status,
            purged_ms=purged_ms,
            deleted_by=deleted_by,
            unless_held=unless_held,
        )
        return recording.recording_id in done

    def tombstone_many(
        self,
        erasures: Sequence[tuple[Recording, Sequence[Event | None]]],
        status: RecordingStatus,
        *,
        purged_ms: int,
        deleted_by: str | None = None,
        unless_held: bool = True,
    ) -> set[str]:
        """``tombstone`` for a batch, in one transaction: the ids of those tombstoned (each
        (recording, events) pair is checked on its own, as ``tombstone`` checks one)."""
        done = self._repo.tombstone_many(
            erasures,
            status,
            purged_ms=purged_ms,
            deleted_by=deleted_by,
            unless_held=unless_held,
        )
        self._wrote(bool(done))
        return done

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Writes inside (in this thread) bump the epoch once, at the end: a purge of hundreds
        of recordings, or a tenant's retention change, is one bump, not one a row. This
        process forgets at every write all the same. The bump happens even when a later write
        fails: what was written before the failure is committed."""
        depth = getattr(self._thread, "depth", 0)
        self._thread.depth = depth + 1
        try:
            yield
        finally:
            self._thread.depth = depth
            if depth == 0 and getattr(self._thread, "wrote", False):
                self._thread.wrote = False
                self._repo.bump_cache_epoch()

    def _wrote(self, changed: bool = True) -> bool:
        """After a committed write: forget here now, and tell the other processes (through the
        epoch) now or at the end of this thread's batch."""
        self.forget()
        if getattr(self._thread, "depth", 0):
            self._thread.wrote = True
        else:
            self._repo.bump_cache_epoch()
        return changed

    # --- invalidation ---------------------------------------------------------------------

    def forget(self) -> None:
        """Drop everything held here (this process, now)."""
        with self._entries:
            self._recordings.clear()
            self._sessions.clear()
            self.generation = next(self._generations)

    def reload(self) -> None:
        """Another process changed what may be served (the change feed says so): drop
        everything now, not at the next epoch check, and take the epoch as it is now."""
        with self._lock:
            self._epoch = self._repo.cache_epoch()
            self.forget()
            self._checked = time.monotonic()

    def _fresh(self) -> float:
        """The monotonic now, after dropping everything if another process changed what may be
        served since the last check (at most one epoch read per ``check_seconds``)."""
        now = time.monotonic()
        if now - self._checked >= self.check_seconds:
            with self._lock:
                if now - self._checked >= self.check_seconds:
                    epoch = self._repo.cache_epoch()
                    if epoch != self._epoch:
                        self._epoch = epoch
                        self.forget()
                    self._checked = time.monotonic()
        return now
