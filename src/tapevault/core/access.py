"""Access events: who touched which recording, how, with what outcome.

The vocabulary is small and fixed ("subject.action"); the request's who/where arrives as a plain
``Actor`` value, never a framework request object. This version writes each event as one JSON line
to the ``tapevault.access`` logger; the tamper-evident store plugs in behind the same protocol.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import orjson

from tapevault.errors import Unavailable


class Action(enum.StrEnum):
    SESSION_CREATE = "session.create"
    CALL_URLS = "call.urls_issue"
    CALL_METADATA = "call.metadata_read"
    CALL_DOWNLOAD = "call.download"
    MERGED_URLS = "merged.urls_issue"
    KEY_CREATE = "api_key.create"
    KEY_LIST = "api_key.list"
    KEY_REVOKE = "api_key.revoke"
    SESSION_READ = "session.read"
    SESSION_LIST = "session.list"  # a page of the native listing; its filters in the detail
    SESSION_END = "session.end"
    RECORDING_UPLOAD = "recording.upload"
    STREAM_TICKET = "stream.ticket"
    URLS_ISSUE = "recording.urls_issue"
    PLAYER_LINK_CREATE = "player_link.create"
    PLAYER_LINK_LIST = "player_link.list"
    PLAYER_LINK_REVOKE = "player_link.revoke"
    PLAYER_PLAYLIST = "player.playlist"  # media URLs issued to a player page, through its link
    MEDIA_READ = "media.read"  # one request of the gateway that served nothing (403, 404, 410)
    MEDIA_PLAYBACK = "media.playback"  # the folded requests of one playback
    MEDIA_PEAKS = "media.peaks"  # a recording's waveform peaks, read through a signed URL
    AUTH_FAILURE = "auth.failure"
    HOLD_SET = "session.hold_set"
    HOLD_CLEAR = "session.hold_clear"
    SESSION_DELETE = "session.delete"
    RECORDING_DELETE = "recording.delete"
    RETENTION_SET = "retention.set"
    RETENTION_PURGE = "retention.purge"
    AUDIT_READ = "audit.read"
    METRICS_READ = "metrics.read"  # only refused scrapes are written (401 is auth.failure)
    WEBHOOK_CREATE = "webhook.create"
    WEBHOOK_LIST = "webhook.list"
    WEBHOOK_READ = "webhook.read"
    WEBHOOK_DELETE = "webhook.delete"
    WEBHOOK_ROTATE = "webhook.rotate_secret"
    WEBHOOK_DELIVERIES = "webhook.deliveries_read"
    WEBHOOK_REPLAY = "webhook.replay"

    @property
    def durable(self) -> bool:
        """Whether the record must be written before the answer leaves (the compliance list:
        URLs issued, metadata read, deletion, holds, retention; media has its own rule)."""
        return self in _DURABLE


_DURABLE = frozenset(
    {
        Action.URLS_ISSUE,
        Action.PLAYER_PLAYLIST,
        Action.PLAYER_LINK_CREATE,
        Action.PLAYER_LINK_REVOKE,
        Action.CALL_URLS,
        Action.CALL_METADATA,
        Action.MERGED_URLS,
        Action.HOLD_SET,
        Action.HOLD_CLEAR,
        Action.SESSION_DELETE,
        Action.RECORDING_DELETE,
        Action.RETENTION_SET,
        Action.RETENTION_PURGE,
        Action.AUDIT_READ,
    }
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked, from where. Holds ids only: never a token, secret or key."""

    partner_id: str | None = None
    # The credential: "suki_token", "kore_jwt", "api_key", "signed_url", "stream_ticket", "cli",
    # "player_link" (token_id: the link's id).
    kind: str | None = None
    provider_id: str | None = None
    token_id: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class AccessEvent:
    action: Action
    actor: Actor
    status: int
    at_ms: int
    session_id: str | None = None
    recording_id: str | None = None
    mode: str | None = None
    ranges: list[tuple[int, int]] = field(default_factory=list)
    bytes_sent: int = 0
    error: str | None = None
    detail: dict[str, Any] | None = None


class AccessLog(Protocol):
    @property
    def healthy(self) -> bool:
        """Whether records can be written now (as last seen: cheap enough for /healthz)."""
        ...

    def record(self, event: AccessEvent) -> None:
        """Queue the event; never blocks, never raises."""
        ...

    def commit(self, event: AccessEvent) -> None:
        """Write the event durably before returning (threads); ``Unavailable`` if impossible."""
        ...

    def commit_many(self, events: Sequence[AccessEvent]) -> None:
        """Write all the events durably before returning, as one append where the log can
        (the purge logs a batch of recordings with one commit and one sync, not one each);
        ``Unavailable`` unless every one of them is confirmed."""
        ...

    async def commit_async(self, event: AccessEvent) -> None:
        """The same, for the event loop."""
        ...


class LoggingAccessLog:
    """Access events as JSON lines on the ``tapevault.access`` logger."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("tapevault.access")

    @property
    def healthy(self) -> bool:
        return True

    def record(self, event: AccessEvent) -> None:
        if self._logger.isEnabledFor(logging.INFO):
            self._logger.info(orjson.dumps(asdict(event)).decode())

    def commit(self, event: AccessEvent) -> None:
        self.record(event)

    def commit_many(self, events: Sequence[AccessEvent]) -> None:
        for event in events:
            self.record(event)

    async def commit_async(self, event: AccessEvent) -> None:
        self.record(event)


class MemoryAccessLog:
    """Keeps events in a list; for tests. ``failing`` makes every durable write fail."""

    def __init__(self) -> None:
        self.events: list[AccessEvent] = []
        self.failing = False

    @property
    def healthy(self) -> bool:
        return not self.failing

    def record(self, event: AccessEvent) -> None:
        self.events.append(event)

    def commit(self, event: AccessEvent) -> None:
        if self.failing:
            raise Unavailable("The access log cannot be written; nothing was served.")
        self.events.append(event)

    def commit_many(self, events: Sequence[AccessEvent]) -> None:
        if self.failing:  # all or nothing, as the durable log's one append
            raise Unavailable("The access log cannot be written; nothing was served.")
        self.events.extend(events)

    async def commit_async(self, event: AccessEvent) -> None:
        self.commit(event)
