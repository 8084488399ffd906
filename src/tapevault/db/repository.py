"""The ``Repository`` port over SQLAlchemy Core, for SQLite and PostgreSQL alike.

Writes go through SQLAlchemy; the point reads of the request hot path go through ``FastReader``
(plain DBAPI, see fastread.py for the measured reason).

Every session and recording read is scoped by partner id in the SQL itself, so a caller can never
see another partner's rows by forgetting a check in Python.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import fields
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Update,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from tapevault.core.catalog import RecordingFacts, SessionQuery
from tapevault.core.events import Event
from tapevault.core.lifecycle import PENDING, TOMBSTONES
from tapevault.core.model import (
    MERGED_SEQUENCE,
    ApiKey,
    Delivery,
    Job,
    JobKind,
    KeyRole,
    PlayerLink,
    Recording,
    RecordingStatus,
    Session,
    SessionKind,
    SessionStatus,
    SigningKey,
    Tenant,
)
from tapevault.core.ports import (
    Announcer,
    ChannelTaken,
    MergePlanner,
    MergeQueued,
    SequenceTaken,
)
from tapevault.db.changes import CHANNEL as CHANGES_CHANNEL
from tapevault.db.engine import database_now_ms
from tapevault.db.fastread import FastReader
from tapevault.db.outbox import write_events
from tapevault.db.schema import (
    DUE_WHERE,
    UNREMOVED_WHERE,
    api_keys,
    cache_epoch,
    jobs,
    partners,
    player_links,
    recordings,
    sessions,
    signing_keys,
    stream_tickets,
    task_leases,
)


class SqlRepository:
    """Metadata in a relational database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.fast = FastReader(engine)

    def close(self) -> None:
        self.fast.close()
        self.engine.dispose()

    # partners -----------------------------------------------------------------------------

    def create_tenant(self, tenant: Tenant) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(partners).values({f.name: getattr(tenant, f.name) for f in fields(tenant)})
            )

    def get_tenant(self, partner_id: str) -> Tenant | None:
        return _tenant(self.fast.one("partner", (partner_id,)))

    def get_tenant_by_workspace(self, workspace_id: str) -> Tenant | None:
        return _tenant(self.fast.one("tenant_by_workspace", (workspace_id,)))

    def get_tenant_by_kore_client(self, client_id: str) -> Tenant | None:
        return _tenant(self.fast.one("tenant_by_kore_client", (client_id,)))

    # Typed writes of the settings an operator may change after creation: the column each
    # touches is named here, never by the caller.

    def set_tenant_retention(self, partner_id: str, seconds: int) -> None:
        self._update_tenant(partner_id, retention_seconds=seconds)

    def set_kore_client_secret(self, partner_id: str, secret: str) -> None:
        self._update_tenant(partner_id, kore_client_secret=secret)

    def set_storage_quota(self, partner_id: str, quota_bytes: int | None) -> None:
        self._update_tenant(partner_id, storage_quota_bytes=quota_bytes)

    def set_delivery(self, partner_id: str, delivery: Delivery) -> None:
        self._update_tenant(partner_id, delivery=delivery.value)

    def set_recording_enabled(self, partner_id: str, enabled: bool) -> None:
        self._update_tenant(partner_id, recording_enabled=enabled)

    def _update_tenant(self, partner_id: str, **values: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(partners).where(partners.c.partner_id == partner_id).values(**values)
            )
            # A rotated secret must stop verifying on every node now, not when the token
            # verifiers' caches lapse (db/changes.py).
            self._changed(conn)

    # workspace API keys -------------------------------------------------------------------

    def add_api_key(self, key: ApiKey) -> None:
        values = {f.name: getattr(key, f.name) for f in fields(key)}
        values["role"] = key.role.value
        with self.engine.begin() as conn:
            conn.execute(insert(api_keys).values(values))

    def get_api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        row = self.fast.one("api_key_by_hash", (key_hash,))
        return None if row is None else _api_key(row)

    def list_api_keys(self, partner_id: str) -> Sequence[ApiKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(api_keys)
                .where(api_keys.c.partner_id == partner_id)
                .order_by(api_keys.c.created_ms, api_keys.c.key_id)
            ).all()
        return [_api_key(row) for row in rows]

    def revoke_api_key(self, partner_id: str, key_id: str, now_ms: int) -> bool:
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.partner_id == partner_id,
                    api_keys.c.key_id == key_id,
                    api_keys.c.revoked_ms.is_(None),
                )
                .values(revoked_ms=now_ms)
            ).rowcount
        return changed == 1

    # sessions -----------------------------------------------------------------------------

    # player links ---------------------------------------------------------------------------

    def add_player_link(self, link: PlayerLink) -> None:
        values = {f.name: getattr(link, f.name) for f in fields(link)}
        with self.engine.begin() as conn:
            conn.execute(insert(player_links).values(values))

    def get_player_link(self, link_id: str) -> PlayerLink | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(player_links).where(player_links.c.link_id == link_id)
            ).first()
        return None if row is None else PlayerLink(**row._mapping)

    def list_player_links(self, partner_id: str, session_id: str) -> Sequence[PlayerLink]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(player_links)
                .where(
                    player_links.c.partner_id == partner_id,
                    player_links.c.session_id == session_id,
                )
                .order_by(player_links.c.created_ms, player_links.c.link_id)
            ).all()
        return [PlayerLink(**row._mapping) for row in rows]

    def revoke_player_link(self, partner_id: str, link_id: str, now_ms: int) -> bool:
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(player_links)
                .where(
                    player_links.c.partner_id == partner_id,
                    player_links.c.link_id == link_id,
                    player_links.c.revoked_ms.is_(None),
                )
                .values(revoked_ms=now_ms)
            ).rowcount
        return changed == 1

    def create_session(self, session: Session) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(sessions).values(_session_values(session)))

    def get_session(self, partner_id: str, session_id: str) -> Session | None:
        row = self.fast.one("session", (session_id, partner_id))
        return None if row is None else _session(row)

    def get_session_with_recordings(
        self, partner_id: str, session_id: str
    ) -> tuple[Session | None, Sequence[Recording]]:
        session, rows = self.fast.session_and_recordings(session_id, partner_id)
        if session is None:
            return None, []
        return _session(session), [_recording(r) for r in rows]

    def update_session_status(
        self,
        partner_id: str,
        session_id: str,
        status: SessionStatus,
        ended_ms: int | None,
        *,
        if_status: SessionStatus | None = None,
    ) -> bool:
        conditions = [sessions.c.session_id == session_id, sessions.c.partner_id == partner_id]
        if if_status is not None:
            conditions.append(sessions.c.status == if_status.value)
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(sessions).where(*conditions).values(status=status.value, ended_ms=ended_ms)
            ).rowcount
        return changed == 1

    def end_session(
        self,
        partner_id: str,
        session_id: str,
        ended_ms: int,
        plan: MergePlanner,
        announce: Announcer | None = None,
    ) -> MergeQueued | None:
        with self.engine.begin() as conn:
            # The update locks the session's row first (PostgreSQL), or the database (SQLite):
            # a recording finishing at the same moment waits, then sees the session ended.
            ended = conn.execute(
                update(sessions)
                .where(
                    sessions.c.session_id == session_id,
                    sessions.c.partner_id == partner_id,
                    sessions.c.status != SessionStatus.COMPLETED.value,
                )
                .values(status=SessionStatus.COMPLETED.value, ended_ms=ended_ms)
            ).rowcount
            if ended != 1:
                return None
            return _queue_merge(conn, partner_id, session_id, plan, announce, self._db_now_ms())

    # recordings ---------------------------------------------------------------------------

    def next_sequence_number(self, session_id: str) -> int:
        with self.engine.connect() as conn:
            current = conn.execute(
                select(func.max(recordings.c.sequence_number)).where(
                    recordings.c.session_id == session_id
                )
            ).scalar()
        return int(current or 0) + 1

    def stored_bytes(self, partner_id: str) -> int:
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.coalesce(func.sum(recordings.c.size_bytes), 0)).where(
                    recordings.c.partner_id == partner_id,
                    recordings.c.status == RecordingStatus.AVAILABLE.value,
                )
            ).scalar()
        return int(total or 0)

    def add_recording(self, recording: Recording, job: Job | None = None) -> None:
        values: dict[str, Any] = _recording_values(recording)
        if recording.writer_id is not None:
            values["heartbeat_ms"] = self._db_now_ms()  # the writer's lease starts now
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(recordings).values(**values))
                if job is not None:
                    conn.execute(insert(jobs).values(**_job_values(job)))
        except IntegrityError as exc:
            if recording.channel is not None and self._channel_taken(recording):
                raise ChannelTaken(recording.session_id, recording.channel) from exc
            raise SequenceTaken(recording.session_id) from exc

    def _channel_taken(self, recording: Recording) -> bool:
        """Whether the insert lost to the one-recording-a-channel index (rather than to a
        sequence number): asked of the data, not of the driver's error text."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(recordings.c.recording_id)
                .where(
                    recordings.c.session_id == recording.session_id,
                    recordings.c.channel == recording.channel,
                    recordings.c.status != RecordingStatus.FAILED.value,
                    recordings.c.recording_id != recording.recording_id,
                )
                .limit(1)
            ).first()
        return found is not None

    def update_recording(
        self,
        recording: Recording,
        *,
        expect: RecordingStatus,
        writer_id: str | None = None,
        job: Job | None = None,
    ) -> bool:
        values = _recording_values(recording)
        del values["recording_id"]
        conditions = [
            recordings.c.recording_id == recording.recording_id,
            recordings.c.status == expect.value,
        ]
        if writer_id is not None:
            conditions.append(recordings.c.writer_id == writer_id)
        with self.engine.begin() as conn:
            changed = conn.execute(update(recordings).where(*conditions).values(**values)).rowcount
            if changed == 1 and job is not None:
                conn.execute(insert(jobs).values(**_job_values(job)))
        return changed == 1

    def finish_recording(
        self,
        recording: Recording,
        *,
        expect: RecordingStatus,
        plan: MergePlanner,
        announce: Announcer | None = None,
    ) -> tuple[bool, MergeQueued | None]:
        values = _recording_values(recording)
        del values["recording_id"]
        with self.engine.begin() as conn:
            _lock_session(conn, recording.partner_id, recording.session_id)
            changed = conn.execute(
                update(recordings)
                .where(
                    recordings.c.recording_id == recording.recording_id,
                    recordings.c.status == expect.value,
                )
                .values(**values)
            ).rowcount
            if changed != 1:
                return False, None
            queued = _queue_merge(
                conn, recording.partner_id, recording.session_id, plan, announce, self._db_now_ms()
            )
            return True, queued

    def recordings_with_status(self, status: RecordingStatus) -> Sequence[Recording]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(recordings).where(recordings.c.status == status.value)).all()
        return [_recording(row) for row in rows]

    # live streams' leases: times by the database's clock, never a server's (see recovery.py)

    def _db_now_ms(self) -> ColumnElement[int]:
        return database_now_ms(self.engine)

    def database_now_ms(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(self._db_now_ms())).scalar_one())

    def heartbeat(self, writer_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(recordings)
                .where(
                    recordings.c.writer_id == writer_id,
                    recordings.c.status == RecordingStatus.RECEIVING.value,
                )
                .values(heartbeat_ms=self._db_now_ms())
            )

    def streams_held_by(self, writer_id: str) -> set[str]:
        # Plain DBAPI: asked ten times a second per process (a third of the cost through Core).
        return set(self.fast.column("streams_held", (RecordingStatus.RECEIVING.value, writer_id)))

    def take_over_stream(
        self, recording_id: str, writer_id: str | None, stale_ms: int | None, job: Job
    ) -> bool:
        held_by = (
            recordings.c.writer_id.is_(None)
            if writer_id is None
            else recordings.c.writer_id == writer_id
        )
        conditions = [
            recordings.c.recording_id == recording_id,
            recordings.c.status == RecordingStatus.RECEIVING.value,
            held_by,
        ]
        if stale_ms is not None:
            conditions.append(
                or_(
                    recordings.c.heartbeat_ms.is_(None),
                    recordings.c.heartbeat_ms < self._db_now_ms() - stale_ms,
                )
            )
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(recordings)
                .where(*conditions)
                .values(
                    status=RecordingStatus.PROCESSING.value,
                    recovered=True,
                    writer_id=None,
                    heartbeat_ms=None,
                )
            ).rowcount
            if taken == 1:
                conn.execute(insert(jobs).values(**_job_values(job)))
        return taken == 1

    def get_session_by_external_id(self, partner_id: str, external_id: str) -> Session | None:
        row = self.fast.one("session_by_external", (external_id, partner_id))
        return None if row is None else _session(row)

    def update_session_attributes(
        self, partner_id: str, session_id: str, attributes: Mapping[str, str]
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sessions)
                .where(sessions.c.session_id == session_id, sessions.c.partner_id == partner_id)
                .values(attributes=_attributes_json(attributes))
            )

    def list_sessions(self, partner_id: str) -> Sequence[Session]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(sessions)
                .where(sessions.c.partner_id == partner_id)
                .order_by(sessions.c.created_ms)
            ).all()
        return [_session(row) for row in rows]

    def find_sessions(self, query: SessionQuery) -> Sequence[tuple[Session, RecordingFacts]]:
        """Up to ``limit + 1`` of the tenant's sessions matching ``query``, newest first by
        (created_ms, session_id), each with its own recordings (the merged rendition is not
        one) aggregated in SQL, so a page costs one row per session whatever it holds."""
        s = sessions.c
        conditions = [s.partner_id == query.partner_id, *_session_filters(query)]
        if query.after is not None:
            at, last = query.after.created_ms, query.after.session_id
            conditions.append(or_(s.created_ms < at, and_(s.created_ms == at, s.session_id < last)))
        # A database outage is Unavailable (503) here as everywhere (db/outage.py).
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(sessions)
                .where(*conditions)
                .order_by(s.created_ms.desc(), s.session_id.desc())
                .limit(query.limit + 1)
            ).all()
            found = [_session(row) for row in rows]
            known = _recording_facts(conn, query.partner_id, [x.session_id for x in found])
        return [(x, known.get(x.session_id, RecordingFacts())) for x in found]

    # Typed writes of a session's retention, hold and deletion mark; each False if there is no
    # such session for this tenant. ``events`` are written with the change (webhooks).

    def set_session_retention(self, partner_id: str, session_id: str, seconds: int | None) -> bool:
        return self._update_session(partner_id, session_id, (), retention_seconds=seconds)

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
        return self._update_session(
            partner_id, session_id, events, hold_reason=reason, hold_by=by, hold_set_ms=set_ms
        )

    def clear_hold(self, partner_id: str, session_id: str, *, events: Sequence[Event] = ()) -> bool:
        return self._update_session(
            partner_id, session_id, events, hold_reason=None, hold_by=None, hold_set_ms=None
        )

    def mark_session_deleted(self, partner_id: str, session_id: str, deleted_ms: int) -> bool:
        return self._update_session(partner_id, session_id, (), deleted_ms=deleted_ms)

    def _update_session(
        self, partner_id: str, session_id: str, events: Sequence[Event], **values: object
    ) -> bool:
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(sessions)
                .where(sessions.c.session_id == session_id, sessions.c.partner_id == partner_id)
                .values(**values)
            ).rowcount
            if changed == 1:
                write_events(conn, events, self._db_now_ms())
        return changed == 1

    # retention ----------------------------------------------------------------------------

    def set_recording_expiry(
        self, recording_id: str, expires_ms: int, retention_seconds: int | None, level: str
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(recordings)
                .where(recordings.c.recording_id == recording_id)
                .values(
                    expires_ms=expires_ms,
                    retention_seconds=retention_seconds,
                    retention_policy=level,
                )
            )

    def due_for_purge(self, now_ms: int, limit: int) -> Sequence[Recording]:
        """Finished recordings past their expiry whose session is not on legal hold."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(recordings)
                .join(sessions, sessions.c.session_id == recordings.c.session_id)
                .where(
                    recordings.c.expires_ms <= now_ms,
                    text(f"recordings.{DUE_WHERE}"),  # available or failed: ix_recordings_due
                    sessions.c.hold_set_ms.is_(None),
                )
                .order_by(recordings.c.expires_ms)
                .limit(limit)
            ).all()
        return [_recording(row) for row in rows]

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
        """Mark a recording EXPIRED or DELETED (its audio is to go), if it is still in the state
        it was read in and — with ``unless_held`` — its session is not on legal hold *now*: the
        hold is checked in the same statement, so a hold acknowledged a moment ago always wins.
        False when either changed first."""
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
        """``tombstone`` for each (recording, its events), in one transaction and one UPDATE
        that checks each row's own state and its session's hold, as ``tombstone`` does. The ids
        of those tombstoned; the others changed first (the caller re-reads them)."""
        if not erasures:
            return set()
        # Every session of the batch is locked first, in one order (sorted): a hold being set
        # on one of them either committed before (and this UPDATE, later, sees it) or waits for
        # this transaction; and two purgers whose batches share a session wait for each other
        # instead of deadlocking (PostgreSQL). Events of a session are numbered and ordered
        # under its lock too (db/outbox.py).
        for_update = sorted({(r.session_id, r.partner_id) for r, _ in erasures})
        values = _tombstone_values(status, purged_ms, deleted_by)
        with self.engine.begin() as conn:
            for session_id, partner_id in for_update:
                _lock_session(conn, partner_id, session_id)
            done = _tombstone_rows(conn, [r for r, _ in erasures], values, unless_held)
            reported = [e for r, events in erasures if r.recording_id in done for e in events]
            write_events(conn, reported, self._db_now_ms())
        return done

    def mark_removed_many(self, recording_ids: Collection[str], now_ms: int) -> None:
        """Record that the audio of these tombstones left storage (one statement)."""
        if not recording_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(recordings)
                .where(recordings.c.recording_id.in_(list(recording_ids)))
                .values(removed_ms=now_ms)
            )

    def pending_removals(self, limit: int) -> Sequence[Recording]:
        """Tombstones whose audio has not been removed yet (a crash came in between)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(recordings)
                .where(text(UNREMOVED_WHERE))  # expired or deleted: ix_recordings_unremoved
                .limit(limit)
            ).all()
        return [_recording(row) for row in rows]

    def cache_epoch(self) -> int:
        row = self.fast.one("epoch", ())
        return int(row[0]) if row else 0

    def bump_cache_epoch(self) -> None:
        with self.engine.begin() as conn:
            self._changed(conn)

    def _changed(self, conn: Connection) -> None:
        """In the transaction of a write that changes what may be served: move the epoch, and
        on PostgreSQL wake every process's change feed when it commits (db/changes.py)."""
        conn.execute(
            update(cache_epoch).where(cache_epoch.c.id == 1).values(epoch=cache_epoch.c.epoch + 1)
        )
        if self.engine.dialect.name == "postgresql":
            conn.execute(select(func.pg_notify(CHANGES_CHANNEL, "")))

    # merged renditions --------------------------------------------------------------------

    def get_merged(self, partner_id: str, session_id: str) -> Recording | None:
        row = self.fast.one("merged", (session_id, partner_id))
        return None if row is None else _recording(row)

    def merged_renditions(self, sessions: Collection[tuple[str, str]]) -> Sequence[Recording]:
        """The merged renditions (sequence 0) of these (partner id, session id) sessions, those
        that have one, in one query."""
        if not sessions:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(recordings).where(
                    recordings.c.sequence_number == MERGED_SEQUENCE,
                    tuple_(recordings.c.partner_id, recordings.c.session_id).in_(list(sessions)),
                )
            ).all()
        return [_recording(row) for row in rows]

    def replace_merged(self, old: Recording | None, new: Recording, job: Job) -> bool:
        """Swap a session's merged rendition for a new (PROCESSING) one with its job, in one
        transaction; False when another process replaced it first (the caller re-reads)."""
        try:
            with self.engine.begin() as conn:
                _lock_session(conn, new.partner_id, new.session_id)  # see _queue_merge
                if old is not None:
                    conn.execute(delete(jobs).where(jobs.c.recording_id == old.recording_id))
                    gone = conn.execute(
                        delete(recordings).where(
                            recordings.c.recording_id == old.recording_id,
                            recordings.c.status == old.status.value,
                        )
                    ).rowcount
                    if gone != 1:
                        conn.rollback()
                        return False
                conn.execute(insert(recordings).values(**_recording_values(new)))
                conn.execute(insert(jobs).values(**_job_values(job)))
        except IntegrityError:
            return False
        return True

    # jobs ---------------------------------------------------------------------------------

    def add_job(self, job: Job) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(jobs).values(**_job_values(job)))

    def lease_job(
        self, owner: str, now_ms: int, lease_ms: int, node: str | None = None
    ) -> Job | None:
        """Claim the oldest due job whose lease is free or lapsed (a dead worker's), and which
        is not reserved for another node than ``node`` (``Job.node``, until ``Job.node_until_ms``
        by the caller's clock when that is set).

        The claim is a conditional UPDATE, so two workers (threads or processes, SQLite or
        PostgreSQL) can race for a job and exactly one wins. Leases are written and judged by
        the database's clock, never a server's, so a node whose clock runs ahead cannot take a
        job another still holds; ``now_ms`` (the caller's clock, which scheduled the job) only
        says which jobs are due. A job bound to a node is leased only by that node's workers.
        """
        db_now = self._db_now_ms()
        free = or_(jobs.c.lease_expires_ms.is_(None), jobs.c.lease_expires_ms < db_now)
        anywhere = or_(
            jobs.c.node.is_(None),
            jobs.c.node_until_ms <= now_ms,
            *(() if node is None else (jobs.c.node == node,)),
        )
        with self.engine.connect() as conn:
            candidates = conn.execute(
                select(jobs.c.job_id)
                .where(jobs.c.done_ms.is_(None), jobs.c.run_after_ms <= now_ms, free, anywhere)
                .order_by(jobs.c.run_after_ms)
                .limit(8)
            ).all()
        for (job_id,) in candidates:
            with self.engine.begin() as conn:
                claimed = conn.execute(
                    update(jobs)
                    .where(jobs.c.job_id == job_id, jobs.c.done_ms.is_(None), free, anywhere)
                    .values(
                        lease_owner=owner,
                        lease_expires_ms=db_now + lease_ms,
                        attempts=jobs.c.attempts + 1,
                    )
                ).rowcount
                if claimed == 1:
                    row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
                    assert row is not None
                    return _job(row)
        return None

    def renew_lease(self, job_id: str, owner: str, lease_ms: int) -> bool:
        """Extend ``owner``'s lease on a job it is still running, by the database's clock;
        False when the job is no longer its own (finished, or taken after a lapse)."""
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(jobs)
                .where(
                    jobs.c.job_id == job_id,
                    jobs.c.lease_owner == owner,
                    jobs.c.done_ms.is_(None),
                )
                .values(lease_expires_ms=self._db_now_ms() + lease_ms)
            ).rowcount
        return bool(renewed == 1)

    def bound_jobs(self) -> dict[str, int]:
        """How many unfinished jobs wait for each node (recovered streams' finalizations)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.node, func.count())
                .where(jobs.c.node.is_not(None), jobs.c.done_ms.is_(None))
                .group_by(jobs.c.node)
            ).all()
        return {row[0]: int(row[1]) for row in rows}

    def unbind_jobs(self, node: str) -> int:
        """Let any node run the unfinished jobs bound to ``node`` (whose disk is gone)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.node == node, jobs.c.done_ms.is_(None))
                .values(node=None, lease_owner=None, lease_expires_ms=None)
            )
        return int(result.rowcount)

    def claim_task(self, name: str, owner: str, lease_ms: int) -> bool:
        """Take or renew the lease on a periodic task (by the database's clock): True when
        ``owner`` holds it now, False while another holds a lease that has not lapsed."""
        now = self._db_now_ms()
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(task_leases)
                .where(
                    task_leases.c.name == name,
                    or_(task_leases.c.owner == owner, task_leases.c.expires_ms < now),
                )
                .values(owner=owner, expires_ms=now + lease_ms)
            ).rowcount
            if taken == 1:
                return True
            if conn.execute(select(task_leases.c.name).where(task_leases.c.name == name)).first():
                return False  # held by another, and not lapsed
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(task_leases).values(
                        name=name, owner=owner, expires_ms=self._db_now_ms() + lease_ms
                    )
                )
        except IntegrityError:
            return False  # another took it first, this very moment
        return True

    def finish_job(self, job_id: str, now_ms: int, error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.job_id == job_id)
                .values(done_ms=now_ms, last_error=error, lease_owner=None, lease_expires_ms=None)
            )

    def retry_job(self, job_id: str, run_after_ms: int, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.job_id == job_id)
                .values(
                    run_after_ms=run_after_ms,
                    last_error=error,
                    lease_owner=None,
                    lease_expires_ms=None,
                )
            )

    def lease_owners(self) -> Sequence[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.lease_owner)
                .where(jobs.c.done_ms.is_(None), jobs.c.lease_owner.is_not(None))
                .distinct()
            ).all()
        return [row[0] for row in rows]

    def release_leases(self, owner: str) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.lease_owner == owner, jobs.c.done_ms.is_(None))
                .values(lease_owner=None, lease_expires_ms=None)
            )
        return int(result.rowcount)

    def get_job(self, job_id: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
        return None if row is None else _job(row)

    def pending_jobs(self, recording_id: str) -> Sequence[Job]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs).where(jobs.c.recording_id == recording_id, jobs.c.done_ms.is_(None))
            ).all()
        return [_job(row) for row in rows]

    # stream tickets -----------------------------------------------------------------------

    def add_stream_ticket(
        self,
        ticket_hash: str,
        partner_id: str,
        session_id: str,
        provider_id: str | None,
        expires_ms: int,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(stream_tickets).values(
                    ticket_hash=ticket_hash,
                    partner_id=partner_id,
                    session_id=session_id,
                    provider_id=provider_id,
                    expires_ms=expires_ms,
                )
            )

    def consume_stream_ticket(
        self, ticket_hash: str, now_ms: int
    ) -> tuple[str, str, str | None] | None:
        """Single use: the ticket is deleted by the one call that gets it."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(stream_tickets).where(stream_tickets.c.ticket_hash == ticket_hash)
            ).first()
            if row is None:
                return None
            deleted = conn.execute(
                delete(stream_tickets).where(stream_tickets.c.ticket_hash == ticket_hash)
            ).rowcount
            conn.execute(delete(stream_tickets).where(stream_tickets.c.expires_ms < now_ms))
        if deleted != 1 or row.expires_ms < now_ms:
            return None
        return row.partner_id, row.session_id, row.provider_id

    def list_recordings(self, partner_id: str, session_id: str) -> Sequence[Recording]:
        return self.get_session_with_recordings(partner_id, session_id)[1]

    def get_recording(self, recording_id: str) -> Recording | None:
        row = self.fast.one("recording", (recording_id,))
        return None if row is None else _recording(row)

    # signing keys -------------------------------------------------------------------------

    def list_signing_keys(self) -> Sequence[SigningKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(signing_keys).order_by(
                    signing_keys.c.created_ms.desc(), signing_keys.c.key_id.desc()
                )
            ).all()
        return [
            SigningKey(row.key_id, bytes.fromhex(row.secret_hex), row.created_ms) for row in rows
        ]

    def add_signing_key(self, key: SigningKey) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(signing_keys).values(
                    key_id=key.key_id, secret_hex=key.secret.hex(), created_ms=key.created_ms
                )
            )
            self._changed(conn)  # every node signs with the new key from now on

    def remove_signing_key(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(delete(signing_keys).where(signing_keys.c.key_id == key_id))
            self._changed(conn)  # its URLs stop verifying on every node now
        return bool(result.rowcount)


def _recording_facts(
    conn: Connection, partner_id: str, session_ids: list[str]
) -> dict[str, RecordingFacts]:
    if not session_ids:
        return {}
    r = recordings.c
    kept = r.status.not_in(sorted(t.value for t in TOMBSTONES))
    pending = r.status.in_(sorted(p.value for p in PENDING))
    rows = conn.execute(
        select(
            r.session_id,
            func.count(),
            func.coalesce(func.sum(r.duration_ms), 0),
            func.min(case((kept, r.expires_ms))),
            func.max(case((pending, 1), else_=0)),
            func.max(case((r.status == RecordingStatus.AVAILABLE.value, 1), else_=0)),
        )
        .where(
            r.partner_id == partner_id,
            r.session_id.in_(session_ids),
            r.sequence_number > MERGED_SEQUENCE,
        )
        .group_by(r.session_id)
    ).all()
    return {
        sid: RecordingFacts(
            count=int(count),
            duration_ms=int(duration),
            expires_ms=None if expires is None else int(expires),
            pending=bool(is_pending),
            available=bool(is_available),
        )
        for sid, count, duration, expires, is_pending, is_available in rows
    }


def _session_filters(query: SessionQuery) -> list[ColumnElement[bool]]:
    """The query's filters as SQL conditions on ``sessions``."""
    s, r = sessions.c, recordings.c
    found: list[ColumnElement[bool]] = []
    if query.created_after_ms is not None:
        found.append(s.created_ms >= query.created_after_ms)
    if query.created_before_ms is not None:
        found.append(s.created_ms < query.created_before_ms)
    if query.kinds:
        found.append(s.kind.in_(sorted(k.value for k in query.kinds)))
    if query.external_id is not None:
        found.append(s.external_id == query.external_id)
    if query.provider_id is not None:
        found.append(s.provider_id == query.provider_id)
    if query.on_hold is not None:
        found.append(s.hold_set_ms.is_not(None) if query.on_hold else s.hold_set_ms.is_(None))
    if query.expiring_before_ms is not None:
        found.append(
            s.session_id.in_(
                select(r.session_id).where(
                    r.partner_id == query.partner_id,
                    r.expires_ms < query.expiring_before_ms,
                    r.sequence_number > MERGED_SEQUENCE,
                    r.status.not_in(sorted(t.value for t in TOMBSTONES)),
                )
            )
        )
    if query.statuses:
        found.append(or_(*(_status_is(status) for status in sorted(query.statuses))))
    return found


def _status_is(status: SessionStatus) -> ColumnElement[bool]:
    """SQL for "the status clients see is ``status``": the rules of
    ``tapevault.core.lifecycle.session_status``, over the session's own recordings (a test
    checks the two agree on every combination)."""
    s, r = sessions.c, recordings.c
    own = and_(
        r.session_id == s.session_id,
        r.partner_id == s.partner_id,
        r.sequence_number > MERGED_SEQUENCE,
    )
    ended = s.status == SessionStatus.COMPLETED.value
    some = exists().where(own)
    pending = exists().where(own, r.status.in_(sorted(p.value for p in PENDING)))
    available = exists().where(own, r.status == RecordingStatus.AVAILABLE.value)
    match status:
        case SessionStatus.CREATED:
            return and_(~ended, ~some, s.status != SessionStatus.IN_PROGRESS.value)
        case SessionStatus.IN_PROGRESS:
            return and_(~ended, or_(some, s.status == SessionStatus.IN_PROGRESS.value))
        case SessionStatus.PROCESSING:
            return and_(ended, pending)
        case SessionStatus.FAILED:
            return and_(ended, ~pending, some, ~available)
        case _:  # COMPLETED
            return and_(ended, ~pending, or_(~some, available))


def _tombstone_values(
    status: RecordingStatus, purged_ms: int, deleted_by: str | None
) -> dict[str, Any]:
    return {
        "status": status.value,
        "purged_ms": purged_ms,
        "purge_reason": "deleted" if status is RecordingStatus.DELETED else "expired",
        "deleted_by": deleted_by,
    }


def _tombstone_rows(
    conn: Connection, batch: Sequence[Recording], values: Mapping[str, Any], unless_held: bool
) -> set[str]:
    """The compare-and-set of tombstones, one statement for the batch: a row changes only if
    it is still in the state it was read in and (with ``unless_held``) its session is not
    held, both checked by the statement itself. The ids it changed."""
    changed = conn.execute(tombstone_statement(batch, values, unless_held)).scalars()
    return set(changed)


def tombstone_statement(
    batch: Sequence[Recording], values: Mapping[str, Any], unless_held: bool
) -> Update:
    """``_tombstone_rows``' UPDATE. The plain ``recording_id IN (...)`` is what lets SQLite
    find the rows by the key: given only the ``(recording_id, status) IN (VALUES ...)`` pairs it
    scanned every recording, holding the database's one write lock meanwhile (the API's p99 6×
    during a purge at 10 M recordings; ``tests/test_purge_batch.py`` reads the plan)."""
    conditions: list[ColumnElement[bool]] = [
        recordings.c.recording_id.in_([r.recording_id for r in batch]),
        tuple_(recordings.c.recording_id, recordings.c.status).in_(
            [(r.recording_id, r.status.value) for r in batch]
        ),
    ]
    if unless_held:
        held = exists().where(
            sessions.c.session_id == recordings.c.session_id,
            sessions.c.hold_set_ms.is_not(None),
        )
        conditions.append(~held)
    return (
        update(recordings).where(*conditions).values(**values).returning(recordings.c.recording_id)
    )


def _lock_session(conn: Connection, partner_id: str, session_id: str) -> None:
    """Serialize the transactions that may queue a session's merge: a no-op update takes the
    session's row lock on PostgreSQL and the write lock on SQLite, before anything is read."""
    conn.execute(
        update(sessions)
        .where(sessions.c.session_id == session_id, sessions.c.partner_id == partner_id)
        .values(status=sessions.c.status)
    )


def _queue_merge(
    conn: Connection,
    partner_id: str,
    session_id: str,
    plan: MergePlanner,
    announce: Announcer | None = None,
    now: ColumnElement[int] | None = None,
) -> MergeQueued | None:
    """Inside a transaction that holds the session's lock: read the session as it now is,
    write the events ``announce`` finds in it (the webhook outbox, due at the database's
    ``now``), ask ``plan`` for the rendition due, and swap it in for the current one with its
    job."""
    row = conn.execute(
        select(sessions).where(
            sessions.c.session_id == session_id, sessions.c.partner_id == partner_id
        )
    ).first()
    if row is None:
        return None
    found = [
        _recording(r)
        for r in conn.execute(
            select(recordings)
            .where(recordings.c.session_id == session_id, recordings.c.partner_id == partner_id)
            .order_by(recordings.c.sequence_number)
        ).all()
    ]
    session = _session(row)
    if announce is not None and now is not None:
        write_events(conn, announce(session, found), now)
    planned = plan(session, found)
    if planned is None:
        return None
    rendition, job = planned
    old = next((r for r in found if r.sequence_number == MERGED_SEQUENCE), None)
    if old is not None:
        conn.execute(delete(jobs).where(jobs.c.recording_id == old.recording_id))
        conn.execute(delete(recordings).where(recordings.c.recording_id == old.recording_id))
    conn.execute(insert(recordings).values(**_recording_values(rendition)))
    conn.execute(insert(jobs).values(**_job_values(job)))
    return MergeQueued(rendition, old)


def _job_values(job: Job) -> dict[str, Any]:
    values = {f.name: getattr(job, f.name) for f in fields(job)}
    values["kind"] = job.kind.value
    return values


def _job(row: Any) -> Job:
    return Job(row[0], JobKind(row[1]), *row[2:])


def _recording_values(r: Recording) -> dict[str, Any]:
    values = {name: getattr(r, name) for name in _RECORDING_FIELDS}
    values["status"] = r.status.value
    return values


# Rows are read positionally, in the column order of the tables in schema.py, which is the field
# order of the model dataclasses.


def _session(row: Any) -> Session:
    values = dict(zip(_SESSION_FIELDS, row, strict=True))
    values["kind"] = SessionKind(values["kind"])
    values["status"] = SessionStatus(values["status"])
    values["attributes"] = orjson.loads(values["attributes"]) if values["attributes"] else {}
    return Session(**values)


def _session_values(s: Session) -> dict[str, Any]:
    values = {name: getattr(s, name) for name in _SESSION_FIELDS}
    values["kind"] = s.kind.value
    values["status"] = s.status.value
    values["attributes"] = _attributes_json(s.attributes)
    return values


def _attributes_json(attributes: Mapping[str, str]) -> str | None:
    if not attributes:
        return None
    return orjson.dumps(dict(attributes), option=orjson.OPT_SORT_KEYS).decode()


_TENANT_FIELDS = tuple(column.name for column in partners.columns)


def _tenant(row: Any) -> Tenant | None:
    if row is None:
        return None
    values = dict(zip(_TENANT_FIELDS, row, strict=True))
    values["recording_enabled"] = bool(values["recording_enabled"])  # SQLite answers 0/1
    values["delivery"] = Delivery(values["delivery"])
    return Tenant(**values)


def _api_key(row: Any) -> ApiKey:
    values = dict(zip(_API_KEY_FIELDS, row, strict=True))
    values["role"] = KeyRole(values["role"])
    return ApiKey(**values)


def _recording(row: Any) -> Recording:
    values = dict(zip(_RECORDING_FIELDS, row, strict=True))
    values["status"] = RecordingStatus(values["status"])
    values["recovered"] = bool(values["recovered"])
    return Recording(**values)


_RECORDING_FIELDS = tuple(f.name for f in fields(Recording))
_SESSION_FIELDS = tuple(f.name for f in fields(Session))
_API_KEY_FIELDS = tuple(f.name for f in fields(ApiKey))
