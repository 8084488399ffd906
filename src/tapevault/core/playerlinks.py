"""Player links: a session's recordings for people, behind one link that lasts hours.

A link is an id (public: it is in the page's path and the access log) and a 256-bit secret
(shown once, kept only as its SHA-256, like an API key: see core/apikeys.py). The page presents
both to get the playlist: the session's recordings as one timeline, each with a media URL of a
few minutes signed *through the link* (``via``), so that every read is logged as the link's.
Short media URLs are the point: the page renews them while it plays, so a URL copied out of it
dies soon, while the link itself lives until it expires or is revoked.

A link never outlives the audio it plays: its expiry is cut to the session's retention end,
unless the session is on hold.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tapevault.core import policy
from tapevault.core.clock import Clock, now_ms
from tapevault.core.lifecycle import PENDING
from tapevault.core.model import (
    MERGED_CHANNEL,
    PlayerLink,
    Recording,
    Session,
    SessionKind,
    Tenant,
)
from tapevault.core.signing import UrlMode
from tapevault.errors import Conflict, Gone, GoneDetail, InvalidRequest, NotFound, NotReady

SECRET_PREFIX = "tvp_"  # noqa: S105 - a marker, not a secret
DEFAULT_TTL_SECONDS = 12 * 3600
MAX_TTL_SECONDS = 7 * 86400
DEFAULT_MEDIA_SECONDS = 300
MAX_SECRET = 100
LINK_NOT_FOUND = "No such player link."
LINK_EXPIRED = "This player link has expired — ask for a new one."
LINK_REVOKED = "This player link was revoked — ask for a new one."
NOT_READY_RETRY_SECONDS = 2
_LINK_ID = re.compile(r"[0-9a-f]{16}")  # secrets.token_hex(8); any other text is no link


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Track:
    """One recording on the timeline: where it starts, and a short-lived URL to play it."""

    recording: Recording
    offset_ms: int  # from the start of the timeline
    url: str
    expires_at: int  # Unix seconds
    peaks_url: str | None


@dataclass(frozen=True, slots=True)
class Playlist:
    link: PlayerLink
    session: Session
    tracks: Sequence[Track]

    @property
    def duration_ms(self) -> int:
        return max((t.offset_ms + t.recording.duration_ms for t in self.tracks), default=0)


# (recording, mode, expires, held, via) -> (url, expires): Vault.link, narrowed.
Signer = Callable[[Recording, UrlMode, int, bool, str], tuple[str, int]]
# (tenant, recording, expires, held, via) -> peaks URL or None (no peaks): Vault.peaks_link.
Peaks = Callable[[Tenant, Recording, int, bool, str], str | None]
# (tenant, session id) -> a call's merged rendition when it is ready, else None after queueing
# it if it is due (Renditions.merged: a call may never be ended, so a request asks for it).
Merge = Callable[[Tenant, str], Recording | None]


def timeline(session: Session, recordings: Sequence[Recording]) -> list[tuple[Recording, int]]:
    """(recording, offset ms) of what a listener hears, in order; empty while a call's
    channels wait for their merge.

    Ambient and form-filling sessions: segments one after another, by sequence number. A call:
    its merged rendition (both channels time-aligned by ``media_start_epoch_ms``, in one file)
    as the one track — two <audio> elements kept in step drift apart, one file cannot. A call
    of one channel needs no merge: that channel is the track.
    """
    if session.kind is SessionKind.CALL:
        merged = [r for r in recordings if r.channel == MERGED_CHANNEL]
        if merged:
            return [(merged[-1], 0)]
        return [(recordings[0], 0)] if len(recordings) == 1 else []
    offset, out = 0, []
    for recording in sorted(recordings, key=lambda r: r.sequence_number):
        out.append((recording, offset))
        offset += recording.duration_ms
    return out


def _at(item: tuple[Recording, int]) -> tuple[int, str]:
    return item[1], item[0].channel or ""


class PlayerLinkRepository(Protocol):
    def add_player_link(self, link: PlayerLink) -> None: ...

    def get_player_link(self, link_id: str) -> PlayerLink | None: ...

    def list_player_links(self, partner_id: str, session_id: str) -> Sequence[PlayerLink]: ...

    def revoke_player_link(self, partner_id: str, link_id: str, now_ms: int) -> bool: ...

    def list_recordings(self, partner_id: str, session_id: str) -> Sequence[Recording]: ...

    def get_session_with_recordings(
        self, partner_id: str, session_id: str
    ) -> tuple[Session | None, Sequence[Recording]]: ...


class PlayerLinks:
    """Making, listing, revoking and opening player links; a playlist for an open one."""

    def __init__(
        self,
        repo: PlayerLinkRepository,
        clock: Clock,
        sign: Signer,
        peaks: Peaks | None = None,
        media_seconds: int = DEFAULT_MEDIA_SECONDS,
        merge: Merge | None = None,
    ) -> None:
        self.repo = repo
        self.clock = clock
        self.sign = sign
        self.peaks = peaks
        self.media_seconds = media_seconds
        self.merge = merge

    def create(
        self, tenant: Tenant, session: Session, ttl_seconds: int | None
    ) -> tuple[PlayerLink, str]:
        """A new link to ``session`` and its secret (shown once)."""
        if session.deleted_ms is not None:
            # Nothing of it is left to play: a link would only ever show "deleted".
            raise Conflict("The session was deleted; there is nothing left to play.")
        ttl = DEFAULT_TTL_SECONDS if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= MAX_TTL_SECONDS:
            raise InvalidRequest(f"ttl must be from 1 second to {MAX_TTL_SECONDS // 86400}d.")
        now = now_ms(self.clock)
        expires = now + ttl * 1000
        if not session.held:
            end = self._retention_end(tenant, session)
            if policy.is_expired(end, now):
                raise Gone(
                    "The session's audio is past its retention.",
                    GoneDetail("expired", end // 1000, "retention"),
                )
            expires = min(expires, end)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        link = PlayerLink(
            link_id=secrets.token_hex(8),
            partner_id=tenant.partner_id,
            session_id=session.session_id,
            secret_hash=hash_secret(secret),
            created_ms=now,
            expires_ms=expires,
        )
        self.repo.add_player_link(link)
        return link, secret

    def _retention_end(self, tenant: Tenant, session: Session) -> int:
        """When the last of the session's audio stops being served (its own retention if it
        has no audio yet)."""
        recordings = self.repo.list_recordings(tenant.partner_id, session.session_id)
        ends = [r.expires_ms for r in recordings if r.is_servable or r.status in PENDING]
        if ends:
            return max(ends)
        return policy.retention_expiry(tenant.retention_seconds, session)[0]

    def list(self, tenant: Tenant, session: Session) -> Sequence[PlayerLink]:
        return self.repo.list_player_links(tenant.partner_id, session.session_id)

    def revoke(self, tenant: Tenant, link_id: str) -> PlayerLink:
        """Revoke a link of the tenant's (again: no change); another tenant's is not found."""
        link = self.repo.get_player_link(link_id) if _LINK_ID.fullmatch(link_id) else None
        if link is None or link.partner_id != tenant.partner_id:
            raise NotFound(LINK_NOT_FOUND)
        self.repo.revoke_player_link(tenant.partner_id, link_id, now_ms(self.clock))
        found = self.repo.get_player_link(link_id)
        assert found is not None
        return found

    def open(self, link_id: str, secret: str) -> PlayerLink:
        """The link, if ``secret`` is its own and it is still valid.

        An unknown id and a wrong secret answer alike (404), so a guess learns nothing; a
        revoked or expired link answers 410 only to someone holding its secret.
        """
        link = None
        if _LINK_ID.fullmatch(link_id) and 0 < len(secret) <= MAX_SECRET:
            link = self.repo.get_player_link(link_id)
        if link is None or not hmac.compare_digest(link.secret_hash, hash_secret(secret)):
            raise NotFound(LINK_NOT_FOUND)
        if link.revoked_ms is not None:
            raise Gone(LINK_REVOKED, GoneDetail("revoked", link.revoked_ms // 1000, "request"))
        if policy.is_expired(link.expires_ms, now_ms(self.clock)):
            raise Gone(LINK_EXPIRED, GoneDetail("expired", link.expires_ms // 1000, "link"))
        return link

    def playlist(self, tenant: Tenant, link: PlayerLink) -> Playlist:
        """The session's timeline with fresh media URLs, each valid ``media_seconds`` (never
        past the link's own expiry). 404 with a retry hint while nothing is ready yet."""
        session, recordings = self.repo.get_session_with_recordings(
            link.partner_id, link.session_id
        )
        if session is None:
            raise NotFound(LINK_NOT_FOUND)
        now = now_ms(self.clock)
        verdicts = [policy.gone(r, now, held=session.held) for r in recordings]
        live = [r for r, v in zip(recordings, verdicts, strict=True) if v is None]
        servable = [r for r in live if r.is_servable]
        if not servable:
            gone = [v for v in verdicts if v is not None]
            if gone and not live:
                detail = max(gone, key=lambda d: d.at)
                raise Gone("The session's audio is no longer available.", detail)
            raise NotReady(
                "The session has no playable audio yet.", retry_after=NOT_READY_RETRY_SECONDS
            )
        placed = timeline(session, servable)
        if session.kind is SessionKind.CALL and self.merge is not None:
            rendition = self.merge(tenant, session.session_id)
            placed = [] if rendition is None else [(rendition, 0)]
        if not placed:
            raise NotReady(
                "The call's channels are being merged.", retry_after=NOT_READY_RETRY_SECONDS
            )
        expires = min(now // 1000 + self.media_seconds, link.expires_ms // 1000)
        tracks = []
        for recording, offset in placed:
            url, until = self.sign(recording, UrlMode.STREAM, expires, session.held, link.link_id)
            peaks = (
                None
                if self.peaks is None
                else self.peaks(tenant, recording, until, session.held, link.link_id)
            )
            tracks.append(Track(recording, offset, url, until, peaks))
        return Playlist(link, session, tracks)
