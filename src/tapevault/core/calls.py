"""Calls: sessions keyed by a telephony call id, with a caller and an agent channel.

A call is a session of kind ``call`` whose ``external_id`` is the call's SID. Its recordings are
channels: ``inbound`` (the caller) and ``outbound`` (the agent), each placed on the call's
timeline by ``media_start_epoch_ms``. Calls arrive from Twilio Media Streams (both channels live)
or from uploads, one per channel; an uploaded call has no "end": it is available as soon as its
uploads are processed. This module answers what the Amigo dialect asks of a call: its channels'
URLs and the metadata document, computed from the stored audio.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from tapevault.core import policy
from tapevault.core.clock import now_ms
from tapevault.core.lifecycle import PENDING
from tapevault.core.links import RecordingLink
from tapevault.core.lookup import MAX_ID, NOT_READY_RETRY_SECONDS, channel_taken, gone_error
from tapevault.core.model import Recording, RecordingStatus, Session, SessionKind, Tenant
from tapevault.core.signing import UrlGrant, UrlMode
from tapevault.core.vault import Vault
from tapevault.errors import (
    InvalidRequest,
    NotFound,
    NotReady,
    Subject,
    Unavailable,
    UrlRejected,
)

CHANNELS = ("inbound", "outbound")
# What a client may say about a call, and what each may hold.
_ATTRIBUTE_RULES = {
    "direction": re.compile(r"inbound|outbound"),
    "service_id": re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"),
    "tts_provider": re.compile(r"[A-Za-z0-9_.:/ -]{1,64}"),
}


@dataclass(frozen=True, slots=True)
class ChannelFacts:
    """One channel as stored (empty when the channel was never recorded)."""

    format: str = ""
    sample_rate: int = 0
    size_bytes: int = 0
    offset_ms: int = 0  # where it starts on the call's timeline
    duration_ms: int = 0


@dataclass(frozen=True, slots=True)
class CallMetadata:
    call_sid: str
    workspace_id: str
    service_id: str | None
    direction: str
    duration_ms: int
    inbound: ChannelFacts
    outbound: ChannelFacts
    tts_provider: str
    media_start_epoch_ms: int

    @property
    def start_iso(self) -> str:
        return iso_ms(self.media_start_epoch_ms)

    @property
    def end_iso(self) -> str:
        return iso_ms(self.media_start_epoch_ms + self.duration_ms)


@dataclass(frozen=True, slots=True)
class CallLinks:
    call_sid: str
    inbound: RecordingLink | None
    outbound: RecordingLink | None
    metadata_url: str
    expires_at: int


def no_call() -> NotFound:
    """The 404 for an unknown call (or another tenant's), or one none of whose channels can be
    served."""
    return NotFound("No servable call recording.", Subject.CALL)


def call_recording_off() -> Unavailable:
    """The 503 while the tenant has turned call recording off."""
    return Unavailable("Call recording is turned off for this tenant.", Subject.CALL_RECORDING_OFF)


def iso_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


def check_attributes(attributes: dict[str, str]) -> dict[str, str]:
    """The call attributes a client sent, validated; unknown names are refused."""
    for name, value in attributes.items():
        rule = _ATTRIBUTE_RULES.get(name)
        if rule is None:
            raise InvalidRequest(f"unknown call attribute {name!r}")
        if not rule.fullmatch(value):
            raise InvalidRequest(f"invalid value for {name}")
    return attributes


def stored_format(recording: Recording) -> str:
    """The channel's audio format as captured: ``pcm_mulaw`` for Twilio, ``pcm_s16le`` for a
    16-bit WAV upload, ``mp3``... (the stored file itself is always PCM WAV)."""
    source = recording.source_format.removeprefix("stream/")
    return source.removeprefix("wav/") or f"pcm_s{recording.bits_per_sample}le"


class CallRepository(Protocol):
    def get_tenant(self, partner_id: str) -> Tenant | None: ...

    def get_session(self, partner_id: str, session_id: str) -> Session | None: ...

    def get_session_by_external_id(self, partner_id: str, external_id: str) -> Session | None: ...

    def list_recordings(self, partner_id: str, session_id: str) -> Sequence[Recording]: ...

    def update_session_attributes(
        self, partner_id: str, session_id: str, attributes: Mapping[str, str]
    ) -> None: ...


class Calls:
    def __init__(self, vault: Vault, repo: CallRepository) -> None:
        self.vault = vault
        self.repo = repo

    def find(self, tenant: Tenant, call_sid: str) -> Session:
        session = None
        if 0 < len(call_sid) <= MAX_ID:
            session = self.repo.get_session_by_external_id(tenant.partner_id, call_sid)
        if session is None or session.kind is not SessionKind.CALL:
            raise no_call()
        return session

    def channels(self, tenant: Tenant, call_sid: str) -> tuple[Session, dict[str, Recording]]:
        """The call and its servable channels (the latest available recording of each).

        NotReady while nothing is available yet but something is arriving or being processed;
        NotFound for an unknown call, another tenant's, or one whose audio is gone.
        """
        return self.channels_of(self.find(tenant, call_sid))

    def channels_of(self, session: Session) -> tuple[Session, dict[str, Recording]]:
        now = now_ms(self.vault.clock)
        channels: dict[str, Recording] = {}
        pending = False
        gone = []
        for r in self.repo.list_recordings(session.partner_id, session.session_id):
            if r.channel not in CHANNELS:
                continue
            verdict = policy.gone(r, now, held=session.held)
            if verdict is not None:
                gone.append(verdict)
            elif r.status is RecordingStatus.AVAILABLE and r.channel is not None:
                channels[r.channel] = r  # ordered by sequence: a later upload of a channel wins
            elif r.status in PENDING:
                pending = True
        if not channels:
            if pending:
                raise NotReady(
                    "The call's audio is not processed yet.",
                    retry_after=NOT_READY_RETRY_SECONDS,
                    subject=Subject.CALL_PENDING,
                )
            if gone:
                raise gone_error(max(gone, key=lambda detail: detail.at))
            raise no_call()
        return session, channels

    def links(self, tenant: Tenant, call_sid: str) -> CallLinks:
        """Signed streaming URLs of both channels and of the metadata, for one hour."""
        session, channels = self.channels(tenant, call_sid)
        expires = now_ms(self.vault.clock) // 1000 + policy.CALL_URL_SECONDS
        found = {
            name: self.vault.links.link(
                r, UrlMode.STREAM, expires, held=session.held, delivery=tenant.delivery
            )
            for name, r in channels.items()
        }
        # The metadata document is served while any of its channels is: it lives as long as the
        # longest-lived channel URL.
        document_expires = max(link.expires_at for link in found.values())
        return CallLinks(
            call_sid=call_sid,
            inbound=found.get("inbound"),
            outbound=found.get("outbound"),
            metadata_url=self.vault.links.metadata_url(session, document_expires),
            expires_at=document_expires,
        )

    def metadata(self, tenant: Tenant, call_sid: str) -> CallMetadata:
        session, channels = self.channels(tenant, call_sid)
        return call_metadata(tenant, session, channels)

    def authorize_metadata(
        self, session_id: str, query: Mapping[str, str]
    ) -> tuple[CallMetadata, UrlGrant]:
        """The metadata behind a signed ``metadata_url`` and the grant that reads it; raises
        UrlRejected, NotFound, or Unavailable when the tenant turned call recording off."""
        vault = self.vault
        grant = vault.keys.signer().verify(session_id, query, vault.clock.now())
        if grant.mode is not UrlMode.METADATA:
            raise UrlRejected("invalid", "This URL does not grant a metadata document.")
        tenant = self.repo.get_tenant(grant.partner_id)
        session = self.repo.get_session(grant.partner_id, session_id)
        if tenant is None or session is None or session.kind is not SessionKind.CALL:
            raise no_call()
        if not tenant.recording_enabled:
            raise call_recording_off()
        session, channels = self.channels_of(session)
        return call_metadata(tenant, session, channels), grant

    def accept_upload(
        self,
        tenant: Tenant,
        call_sid: str,
        channel: str,
        spooled: Path,
        source_format: str,
        *,
        media_start_epoch_ms: int | None,
        attributes: dict[str, str],
    ) -> Recording:
        """One channel's audio for a call; the first upload creates the call.

        A channel takes one recording: a second upload while the first is arriving, processing
        or available is a conflict (one that failed may be replaced). The database enforces it
        (concurrent uploads all pass this early check); the check only spares a doomed upload
        the fsync.
        """
        session = self.vault.sessions.call_session(tenant, call_sid)
        if attributes:
            merged = {**session.attributes, **check_attributes(attributes)}
            self.repo.update_session_attributes(tenant.partner_id, session.session_id, merged)
        for r in self.repo.list_recordings(tenant.partner_id, session.session_id):
            if r.channel == channel and r.status is not RecordingStatus.FAILED:
                raise channel_taken(channel)
        return self.vault.ingest.accept_upload(
            tenant,
            session.session_id,
            spooled,
            source_format,
            channel=channel,
            media_start_epoch_ms=media_start_epoch_ms,
        )


def call_metadata(tenant: Tenant, session: Session, channels: dict[str, Recording]) -> CallMetadata:
    """The call's metadata, from its stored channels: start is the earliest channel's first
    sample, each channel sits at its own offset, and the duration runs to the last sample."""
    starts = [r.media_start_epoch_ms for r in channels.values() if r.media_start_epoch_ms]
    start = min(starts) if starts else session.created_ms
    facts: dict[str, ChannelFacts] = {}
    for name, r in channels.items():
        facts[name] = ChannelFacts(
            format=stored_format(r),
            sample_rate=r.sample_rate,
            size_bytes=r.size_bytes,
            offset_ms=(r.media_start_epoch_ms or start) - start,
            duration_ms=r.duration_ms,
        )
    duration = max((f.offset_ms + f.duration_ms for f in facts.values()), default=0)
    attributes = session.attributes
    return CallMetadata(
        call_sid=session.external_id or session.session_id,
        workspace_id=tenant.workspace_id,
        service_id=attributes.get("service_id"),
        direction=attributes.get("direction", "inbound"),
        duration_ms=duration,
        inbound=facts.get("inbound", ChannelFacts()),
        outbound=facts.get("outbound", ChannelFacts()),
        tts_provider=attributes.get("tts_provider", "unknown"),
        media_start_epoch_ms=start,
    )


def new_call_sid() -> str:
    """A call id for tests and demos, shaped like Twilio's (``CA`` + 32 hex digits)."""
    return "CA" + uuid.uuid4().hex
