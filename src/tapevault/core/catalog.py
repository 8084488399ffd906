"""Finding sessions: the listing's filters, its cursor, and what a listed session shows.

The native API and the CLI take the same filters as text (``parse_session_query``), so both
refuse the same values with the same message, naming the parameter. The repository turns a
``SessionQuery`` into its query language; nothing here knows SQL.

Pages are keyset pages, newest first by (created, session id): the cursor is the position of the
last session returned, and the next page starts strictly after it. Unlike an offset, a position
does not move when sessions are created (or deleted) while someone pages, so no session that
existed when paging began is skipped or shown twice. The cursor is opaque to clients (base64url
JSON) but carries nothing secret: a forged one only moves the caller within their own tenant.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from tapevault.core.lifecycle import PENDING, TOMBSTONES, status_of
from tapevault.core.model import Recording, RecordingStatus, Session, SessionKind, SessionStatus
from tapevault.errors import InvalidRequest
from tapevault.numbers import is_digits

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_TEXT = 200  # external ids, provider ids: as long as the columns that hold them
MAX_CURSOR = 200
MAX_SESSION_ID = 64
# Times outside this range are refused rather than wrapped or overflowed (year 1970 to 9999).
MAX_MS = 253_402_300_799_999

FILTERS = (
    "created_after",
    "created_before",
    "status",
    "kind",
    "external_id",
    "provider_id",
    "on_hold",
    "expiring_before",
)
PARAMETERS = (*FILTERS, "cursor", "limit")
E = TypeVar("E", SessionStatus, SessionKind)
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the last session's creation time and id."""

    created_ms: int
    session_id: str


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """One page of a tenant's sessions. Times are Unix ms; ``created_after`` is inclusive,
    ``created_before`` and ``expiring_before`` exclusive (windows that meet do not overlap).
    Empty ``statuses`` or ``kinds``, and None elsewhere, mean "any"."""

    partner_id: str
    created_after_ms: int | None = None
    created_before_ms: int | None = None
    statuses: frozenset[SessionStatus] = frozenset()
    kinds: frozenset[SessionKind] = frozenset()
    external_id: str | None = None
    provider_id: str | None = None
    on_hold: bool | None = None
    # Sessions with a recording whose audio is still kept and whose retention ends before this.
    expiring_before_ms: int | None = None
    after: Position | None = None
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True, slots=True)
class RecordingFacts:
    """What a listing needs of a session's recordings, aggregated by the repository so that a
    session with thousands of recordings costs a page one row, not thousands."""

    count: int = 0
    duration_ms: int = 0
    expires_ms: int | None = None  # the earliest expiry among those whose audio is kept
    pending: bool = False  # one is still receiving or processing
    available: bool = False  # one is served


def facts(recordings: Sequence[Recording]) -> RecordingFacts:
    kept = [r.expires_ms for r in recordings if r.status not in TOMBSTONES]
    return RecordingFacts(
        count=len(recordings),
        duration_ms=sum(r.duration_ms for r in recordings),
        expires_ms=min(kept) if kept else None,
        pending=any(r.status in PENDING for r in recordings),
        available=any(r.status is RecordingStatus.AVAILABLE for r in recordings),
    )


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """A session as a listing shows it: its status as clients see it, and its recordings in
    short (how many, how long, when the first of them that still has audio expires)."""

    session: Session
    status: SessionStatus
    recording_count: int
    duration_ms: int
    expires_ms: int | None


@dataclass(frozen=True, slots=True)
class SessionPage:
    items: Sequence[SessionSummary]
    next_cursor: str | None


def summarize(session: Session, known: RecordingFacts) -> SessionSummary:
    status = status_of(
        session, recorded=known.count > 0, pending=known.pending, available=known.available
    )
    return SessionSummary(
        session=session,
        status=status,
        recording_count=known.count,
        duration_ms=known.duration_ms,
        expires_ms=known.expires_ms,
    )


def page(query: SessionQuery, found: Sequence[tuple[Session, RecordingFacts]]) -> SessionPage:
    """The page from what the repository found for ``query`` (asked for ``limit + 1`` rows:
    the extra one only says that there is a next page)."""
    shown = found[: query.limit]
    last = shown[-1][0] if shown else None
    more = len(found) > query.limit and last is not None
    return SessionPage(
        items=[summarize(session, known) for session, known in shown],
        next_cursor=encode_cursor(Position(last.created_ms, last.session_id))
        if more and last is not None
        else None,
    )


# --- parsing the filters ----------------------------------------------------------------------


def parse_session_query(partner_id: str, pairs: Sequence[tuple[str, str]]) -> SessionQuery:
    """The filters as given in a query string (name, value pairs, in order): every name known
    and given once, every value valid, or ``InvalidRequest`` naming the parameter."""
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in PARAMETERS:
            shown = name[:40].encode("unicode_escape").decode()
            raise InvalidRequest(
                f"unknown parameter '{shown}': the parameters are {', '.join(PARAMETERS)}."
            )
        if name in params:
            raise InvalidRequest(f"{name} is given more than once.")
        if "\x00" in value or len(value) > MAX_CURSOR:
            raise InvalidRequest(
                f"{name} must be text of at most {MAX_CURSOR} characters, without NUL."
            )
        params[name] = value
    get = params.get
    return SessionQuery(
        partner_id=partner_id,
        created_after_ms=parse_instant("created_after", get("created_after")),
        created_before_ms=parse_instant("created_before", get("created_before")),
        statuses=_choices("status", get("status"), SessionStatus),
        kinds=_choices("kind", get("kind"), SessionKind),
        external_id=_text("external_id", get("external_id")),
        provider_id=_text("provider_id", get("provider_id")),
        on_hold=_boolean("on_hold", get("on_hold")),
        expiring_before_ms=parse_instant("expiring_before", get("expiring_before")),
        after=None if get("cursor") is None else decode_cursor(params["cursor"]),
        limit=_limit(get("limit")),
    )


def parse_instant(name: str, value: str | None) -> int | None:
    """Unix seconds, or ISO 8601 (UTC when it names no zone), as Unix milliseconds."""
    if value is None:
        return None
    problem = f"{name} must be an ISO 8601 time (2026-12-02T16:45:03Z) or Unix seconds."
    if is_digits(value, 12):
        ms = int(value) * 1000
    else:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            ms = int(parsed.timestamp() * 1000)
        except (ValueError, OverflowError, OSError):
            raise InvalidRequest(problem) from None
    if not 0 <= ms <= MAX_MS:
        raise InvalidRequest(f"{name} must be between 1970 and 9999.")
    return ms


def _choices(name: str, value: str | None, kind: type[E]) -> frozenset[E]:
    if value is None:
        return frozenset()
    allowed = [member.value for member in kind]
    chosen = set()
    for item in value.split(","):
        if item.strip() not in allowed:
            raise InvalidRequest(
                f"{name} must be one or more of {', '.join(allowed)}, separated by commas."
            )
        chosen.add(kind(item.strip()))
    return frozenset(chosen)


def _text(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not 0 < len(value) <= MAX_TEXT:
        raise InvalidRequest(f"{name} must be 1 to {MAX_TEXT} characters.")
    return value


def _boolean(name: str, value: str | None) -> bool | None:
    if value is None:
        return None
    parsed = _BOOLEANS.get(value.strip().lower())
    if parsed is None:
        raise InvalidRequest(f"{name} must be true or false.")
    return parsed


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not is_digits(value, 4) or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be from 1 to {MAX_LIMIT}.")
    return int(value)


# --- the cursor -------------------------------------------------------------------------------


def encode_cursor(position: Position) -> str:
    raw = json.dumps([position.created_ms, position.session_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Position:
    """The position a ``next_cursor`` names; anything else is refused, never guessed at."""
    bad = InvalidRequest("cursor must be the next_cursor of a previous page.")
    if not 0 < len(text) <= MAX_CURSOR:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not (isinstance(value, list) and len(value) == 2):
        raise bad
    created_ms, session_id = value
    if type(created_ms) is not int or not 0 <= created_ms <= MAX_MS:
        raise bad
    if not isinstance(session_id, str) or not 0 < len(session_id) <= MAX_SESSION_ID:
        raise bad
    if "\x00" in session_id:
        raise bad
    return Position(created_ms, session_id)
