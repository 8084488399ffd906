"""Access events: who touched which recording, how, with what outcome.

The vocabulary is small and fixed ("subject.action"); the request's who/where arrives as a plain
``Actor`` value, never a framework request object. This version writes each event as one JSON line
to the ``tapevault.access`` logger; the tamper-evident store plugs in behind the same protocol.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import orjson


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
    SESSION_END = "session.end"
    RECORDING_UPLOAD = "recording.upload"
    STREAM_TICKET = "stream.ticket"
    URLS_ISSUE = "recording.urls_issue"
    MEDIA_READ = "media.read"
    AUTH_FAILURE = "auth.failure"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked, from where. Holds ids only: never a token, secret or key."""

    partner_id: str | None = None
    # The credential: "suki_token", "kore_jwt", "api_key", "signed_url", "stream_ticket", "cli".
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
    def record(self, event: AccessEvent) -> None: ...


class LoggingAccessLog:
    """Access events as JSON lines on the ``tapevault.access`` logger."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("tapevault.access")

    def record(self, event: AccessEvent) -> None:
        if self._logger.isEnabledFor(logging.INFO):
            self._logger.info(orjson.dumps(asdict(event)).decode())


class MemoryAccessLog:
    """Keeps events in a list; for tests."""

    def __init__(self) -> None:
        self.events: list[AccessEvent] = []

    def record(self, event: AccessEvent) -> None:
        self.events.append(event)
