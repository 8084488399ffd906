"""The ``Repository`` port over SQLAlchemy Core, for SQLite and PostgreSQL alike.

Every session and recording read is scoped by partner id in the SQL itself, so a caller can never
see another partner's rows by forgetting a check in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tapevault.core.model import (
    Partner,
    Recording,
    RecordingStatus,
    Session,
    SessionKind,
    SessionStatus,
    SigningKey,
)
from tapevault.core.ports import SequenceTaken
from tapevault.db.schema import partners, recordings, sessions, signing_keys


class SqlRepository:
    """Metadata in a relational database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # partners -----------------------------------------------------------------------------

    def create_partner(self, partner: Partner) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(partners).values(
                    partner_id=partner.partner_id,
                    name=partner.name,
                    jwt_secret=partner.jwt_secret,
                    retention_seconds=partner.retention_seconds,
                    created_ms=partner.created_ms,
                )
            )

    def get_partner(self, partner_id: str) -> Partner | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(partners).where(partners.c.partner_id == partner_id)).first()
        if row is None:
            return None
        return Partner(
            partner_id=row.partner_id,
            name=row.name,
            jwt_secret=row.jwt_secret,
            retention_seconds=row.retention_seconds,
            created_ms=row.created_ms,
        )

    # sessions -----------------------------------------------------------------------------

    def create_session(self, session: Session) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(sessions).values(
                    session_id=session.session_id,
                    partner_id=session.partner_id,
                    kind=session.kind.value,
                    status=session.status.value,
                    created_ms=session.created_ms,
                    ended_ms=session.ended_ms,
                )
            )

    def get_session(self, partner_id: str, session_id: str) -> Session | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(sessions).where(
                    sessions.c.session_id == session_id, sessions.c.partner_id == partner_id
                )
            ).first()
        if row is None:
            return None
        return Session(
            session_id=row.session_id,
            partner_id=row.partner_id,
            kind=SessionKind(row.kind),
            status=SessionStatus(row.status),
            created_ms=row.created_ms,
            ended_ms=row.ended_ms,
        )

    def update_session_status(
        self, partner_id: str, session_id: str, status: SessionStatus, ended_ms: int | None
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sessions)
                .where(sessions.c.session_id == session_id, sessions.c.partner_id == partner_id)
                .values(status=status.value, ended_ms=ended_ms)
            )

    # recordings ---------------------------------------------------------------------------

    def next_sequence_number(self, session_id: str) -> int:
        with self.engine.connect() as conn:
            current = conn.execute(
                select(func.max(recordings.c.sequence_number)).where(
                    recordings.c.session_id == session_id
                )
            ).scalar()
        return int(current or 0) + 1

    def add_recording(self, recording: Recording) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(recordings).values(**_recording_values(recording)))
        except IntegrityError as exc:
            raise SequenceTaken(recording.session_id) from exc

    def list_recordings(self, partner_id: str, session_id: str) -> Sequence[Recording]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(recordings)
                .where(recordings.c.session_id == session_id, recordings.c.partner_id == partner_id)
                .order_by(recordings.c.sequence_number)
            ).all()
        return [_recording(row) for row in rows]

    def get_recording(self, recording_id: str) -> Recording | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(recordings).where(recordings.c.recording_id == recording_id)
            ).first()
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

    def remove_signing_key(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(delete(signing_keys).where(signing_keys.c.key_id == key_id))
        return bool(result.rowcount)


def _recording_values(r: Recording) -> dict[str, Any]:
    return {
        "recording_id": r.recording_id,
        "session_id": r.session_id,
        "partner_id": r.partner_id,
        "sequence_number": r.sequence_number,
        "status": r.status.value,
        "storage_key": r.storage_key,
        "sample_rate": r.sample_rate,
        "channels": r.channels,
        "bits_per_sample": r.bits_per_sample,
        "duration_ms": r.duration_ms,
        "size_bytes": r.size_bytes,
        "sha256": r.sha256,
        "created_ms": r.created_ms,
        "expires_ms": r.expires_ms,
    }


def _recording(row: Any) -> Recording:
    return Recording(
        recording_id=row.recording_id,
        session_id=row.session_id,
        partner_id=row.partner_id,
        sequence_number=row.sequence_number,
        status=RecordingStatus(row.status),
        storage_key=row.storage_key,
        sample_rate=row.sample_rate,
        channels=row.channels,
        bits_per_sample=row.bits_per_sample,
        duration_ms=row.duration_ms,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        created_ms=row.created_ms,
        expires_ms=row.expires_ms,
    )
