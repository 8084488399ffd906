"""Sessions: created by a dialect, found inside the caller's tenant, ended once.

Every method takes the caller's tenant (already authenticated by a dialect) and looks things up
inside that tenant only; a foreign id is indistinguishable from an unknown one. Methods are
synchronous: the HTTP layer decides whether to run them on the loop (SQLite, microseconds) or in a
thread (PostgreSQL, network round trips).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Protocol

from tapevault.core import events
from tapevault.core.catalog import RecordingFacts, SessionQuery
from tapevault.core.clock import Clock, now_ms
from tapevault.core.jobs import Jobs
from tapevault.core.lookup import MAX_ID, SESSION_NOT_FOUND
from tapevault.core.model import Recording, Session, SessionKind, SessionStatus, Tenant
from tapevault.core.ports import Announcer, MergePlanner, MergeQueued
from tapevault.errors import Conflict, InvalidRequest, NotFound

FORM_FILLING_PREFIX = "ffs-"
MAX_PROVIDER = 200  # the column's width
_CALL_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class SessionRepository(Protocol):
    def create_session(self, session: Session) -> None: ...

    def get_session(self, partner_id: str, session_id: str) -> Session | None: ...

    def get_session_by_external_id(self, partner_id: str, external_id: str) -> Session | None: ...

    def list_recordings(self, partner_id: str, session_id: str) -> Sequence[Recording]: ...

    def find_sessions(self, query: SessionQuery) -> Sequence[tuple[Session, RecordingFacts]]: ...

    def end_session(
        self,
        partner_id: str,
        session_id: str,
        ended_ms: int,
        plan: MergePlanner,
        announce: Announcer | None = None,
    ) -> MergeQueued | None: ...


def new_session_id(kind: SessionKind) -> str:
    """Ambient ids are UUIDs; form-filling ids carry a prefix, so the two spaces never meet."""
    base = str(uuid.uuid4())
    return FORM_FILLING_PREFIX + base if kind is SessionKind.FORM_FILLING else base


class Sessions:
    def __init__(self, repo: SessionRepository, clock: Clock, jobs: Jobs) -> None:
        self.repo = repo
        self.clock = clock
        self.jobs = jobs

    def create_session(
        self, partner: Tenant, kind: SessionKind, provider_id: str | None = None
    ) -> Session:
        if provider_id is not None and (len(provider_id) > MAX_PROVIDER or "\x00" in provider_id):
            raise InvalidRequest(f"sdp_provider_id must be at most {MAX_PROVIDER} characters.")
        session = Session(
            session_id=new_session_id(kind),
            partner_id=partner.partner_id,
            kind=kind,
            status=SessionStatus.CREATED,
            created_ms=now_ms(self.clock),
            provider_id=provider_id or None,
        )
        self.repo.create_session(session)
        return session

    def call_session(self, partner: Tenant, call_sid: str) -> Session:
        """The session of a telephony call, keyed by its call id; created by first contact."""
        if not _CALL_SID.fullmatch(call_sid):
            raise InvalidRequest("callSid must be 1-64 letters, digits, '-' or '_'")
        found = self.repo.get_session_by_external_id(partner.partner_id, call_sid)
        if found is not None:
            return found
        session = Session(
            session_id=str(uuid.uuid4()),
            partner_id=partner.partner_id,
            kind=SessionKind.CALL,
            status=SessionStatus.CREATED,
            created_ms=now_ms(self.clock),
            external_id=call_sid,
        )
        try:
            self.repo.create_session(session)
        except Exception:
            # Another connection of the same call created it first.
            again = self.repo.get_session_by_external_id(partner.partner_id, call_sid)
            if again is None:
                raise
            return again
        return session

    def get_session(self, partner: Tenant, session_id: str) -> Session:
        session = None
        if 0 < len(session_id) <= MAX_ID:
            session = self.repo.get_session(partner.partner_id, session_id)
        if session is None:
            raise NotFound(SESSION_NOT_FOUND)
        return session

    def find_session(self, tenant: Tenant, session_id: str) -> Session | None:
        """A session of the tenant by its id, or a call by its call SID."""
        if not 0 < len(session_id) <= MAX_ID:
            return None
        return self.repo.get_session(tenant.partner_id, session_id) or (
            self.repo.get_session_by_external_id(tenant.partner_id, session_id)
        )

    def session_with_recordings(
        self, partner: Tenant, session_id: str
    ) -> tuple[Session, Sequence[Recording]]:
        session = self.get_session(partner, session_id)
        return session, self.repo.list_recordings(partner.partner_id, session_id)

    def list_recordings(self, partner_id: str, session_id: str) -> Sequence[Recording]:
        """A session's recordings by sequence number (the caller found the session in its
        tenant first)."""
        return self.repo.list_recordings(partner_id, session_id)

    def find_sessions(self, query: SessionQuery) -> Sequence[tuple[Session, RecordingFacts]]:
        """One page of the tenant's sessions (``core.catalog``)."""
        return self.repo.find_sessions(query)

    def end_session(self, partner: Tenant, session_id: str) -> Session:
        """Idempotent: ending an ended session returns it unchanged.

        When its recordings are all processed already, the merged rendition is queued in the
        same transaction (otherwise the last one to finish queues it), so a Kore client asking
        once the worker has run gets ``success`` at the first request.
        """
        session = self.get_session(partner, session_id)
        if session.status is SessionStatus.COMPLETED:
            return session
        ended = now_ms(self.clock)
        queued = self.repo.end_session(
            partner.partner_id,
            session_id,
            ended,
            self.jobs.merge_planner(),
            lambda s, recordings: [events.session_settled(s, recordings, ended)],
        )
        self.jobs.merge_queued(queued)
        return self.get_session(partner, session_id)

    def check_accepts_audio(self, partner: Tenant, session_id: str) -> Session:
        """Raise unless the session exists for this partner and has not ended."""
        session = self.get_session(partner, session_id)
        if session.deleted_ms is not None:
            raise Conflict("The session's audio was deleted; it accepts no more audio.")
        if session.status is SessionStatus.COMPLETED:
            raise Conflict("The session has ended; it accepts no more audio.")
        return session
