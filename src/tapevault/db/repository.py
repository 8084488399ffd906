"""The ``Repository`` port over SQLAlchemy Core, for SQLite and PostgreSQL alike.

Writes go through SQLAlchemy; the point reads of the request hot path go through ``FastReader``
(plain DBAPI, see fastread.py for the measured reason).

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
from tapevault.db.fastread import FastReader
from tapevault.db.schema import partners, recordings, sessions, signing_keys


class SqlRepository:
    """Metadata in a relational database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.fast = FastReader(engine)

    def close(self) -> None:
        self.fast.close()
        self.engine.dispose()

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
        row = self.fast.one("partner", (partner_id,))
        return None if row is None else Partner(*row)

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


# Rows are read positionally, in the column order of the tables in schema.py, which is the field
# order of the model dataclasses.


def _session(row: Any) -> Session:
    return Session(row[0], row[1], SessionKind(row[2]), SessionStatus(row[3]), row[4], row[5])


def _recording(row: Any) -> Recording:
    return Recording(row[0], row[1], row[2], row[3], RecordingStatus(row[4]), *row[5:])
