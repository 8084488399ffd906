"""Media authorisation: whether a signed URL may read a recording's bytes now.

The hot path of every ranged read: the signature is checked by the key ring, the recording comes
from the serving cache (a finished recording never changes), and retention and a legal hold are
applied per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tapevault.core import policy
from tapevault.core.clock import Clock
from tapevault.core.keyring import KeyRing
from tapevault.core.lookup import gone_error, no_recording
from tapevault.core.model import PlayerLink, Recording, Session
from tapevault.core.servingcache import ServingCache
from tapevault.core.signing import AUDIO_MODES, TWILIO_SUBJECT, UrlGrant, UrlMode
from tapevault.errors import UrlRejected


class MediaRepository(Protocol):
    def get_player_link(self, link_id: str) -> PlayerLink | None: ...

    def get_session(self, partner_id: str, session_id: str) -> Session | None: ...


@dataclass(frozen=True, slots=True)
class MediaAccess:
    """A verified right to read one recording's bytes."""

    recording: Recording
    grant: UrlGrant


class MediaAuthorisation:
    def __init__(
        self, repo: MediaRepository, cache: ServingCache, keys: KeyRing, clock: Clock
    ) -> None:
        self.repo = repo
        self.cache = cache
        self.keys = keys
        self.clock = clock

    def authorize_twilio(self, query: dict[str, str]) -> str:
        """The tenant id a Twilio stream URL grants; raises ``UrlRejected``."""
        grant = self.keys.signer().verify(TWILIO_SUBJECT, query, self.clock.now())
        if grant.mode is not UrlMode.TWILIO:
            raise UrlRejected("invalid", "This URL does not grant a Twilio media stream.")
        return grant.partner_id

    def authorize_media(self, recording_id: str, query: dict[str, str]) -> MediaAccess:
        """Verify a signed URL and find its recording; raises UrlRejected, NotFound or Gone."""
        return self._authorize(recording_id, query, peaks=False)

    def authorize_peaks(self, recording_id: str, query: dict[str, str]) -> MediaAccess:
        """The same checks as ``authorize_media``, for a URL of the recording's peaks."""
        return self._authorize(recording_id, query, peaks=True)

    def _authorize(self, recording_id: str, query: dict[str, str], *, peaks: bool) -> MediaAccess:
        now = self.clock.now()
        grant = self.keys.signer().verify(recording_id, query, now)
        if peaks and grant.mode is not UrlMode.PEAKS:
            raise UrlRejected("invalid", "This URL does not grant waveform peaks.")
        if not peaks and grant.mode not in AUDIO_MODES:
            raise UrlRejected("invalid", "This URL does not grant audio.")
        if grant.via is not None:
            # Issued through a player link: revoking the link stops its URLs now, not when
            # they would expire (one indexed read, only for such URLs).
            link = self.repo.get_player_link(grant.via)
            if link is None or link.revoked_ms is not None:
                raise UrlRejected("revoked", "The player link of this URL was revoked.")
        recording = self.cache.servable_recording(recording_id)
        if recording is None or recording.partner_id != grant.partner_id:
            raise no_recording()
        verdict = policy.gone(recording, int(now * 1000))
        if verdict is not None and verdict.reason == "expired" and recording.is_servable:
            # Past retention: only a legal hold on its session keeps it served (a rare path,
            # so the session is read only here).
            session = self.repo.get_session(recording.partner_id, recording.session_id)
            if session is not None and session.held:
                verdict = None
        if verdict is not None:
            raise gone_error(verdict)
        if not recording.is_servable:
            raise no_recording()
        return MediaAccess(recording=recording, grant=grant)
