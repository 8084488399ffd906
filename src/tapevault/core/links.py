"""Links: the signed URLs of recordings, their peaks and a call's metadata document.

A URL is valid until the expiry asked for or the end of its recording's retention, whichever
comes first; within one second the answer to the same question is the same for everyone, so
it is memoized for that second (players and dashboards ask in bursts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tapevault.core import policy
from tapevault.core.clock import Clock, now_ms
from tapevault.core.delivery import DirectLinks
from tapevault.core.keyring import KeyRing
from tapevault.core.lifecycle import PENDING
from tapevault.core.lookup import MAX_ID, gone_error, no_recording, recording_not_ready
from tapevault.core.model import Delivery, Recording, Session, Tenant
from tapevault.core.peaks import has_peaks
from tapevault.core.ports import Stat
from tapevault.core.servingcache import ServingCache
from tapevault.core.signing import TWILIO_SUBJECT, UrlMode, UrlSigner
from tapevault.errors import GoneDetail, NotFound

_MEMO_SIZE = 50_000


@dataclass(frozen=True, slots=True)
class RecordingLink:
    """One entry of the Suki recording response."""

    recording: Recording
    url: str
    expires_at: int


class Links:
    def __init__(
        self,
        keys: KeyRing,
        cache: ServingCache,
        clock: Clock,
        store: Stat,
        media_base_url: str,
        direct: DirectLinks,
    ) -> None:
        self.keys = keys
        self.cache = cache
        self.clock = clock
        self.store = store
        self.media_base_url = media_base_url.rstrip("/")
        self.direct = direct
        self._memo: dict[tuple[str, str, bool, Delivery, tuple[str, ...]], list[RecordingLink]] = {}
        # What the memo was computed under: a second, the cache's generation and the signer.
        self._memo_under: tuple[int, int, UrlSigner | None] = (0, 0, None)

    def recording_links(
        self, partner: Tenant, session_id: str, download: bool
    ) -> list[RecordingLink]:
        """Signed URLs for every servable recording of the session, by sequence number.

        404 (``NotReady``) while nothing is finished, 410 (``Gone``) once retention is over.
        """
        session: Session | None = None
        recordings: Sequence[Recording] = ()
        if 0 < len(session_id) <= MAX_ID:
            session, recordings = self.cache.settled_session(partner.partner_id, session_id)
        if session is None:
            raise no_recording()
        now = now_ms(self.clock)
        verdicts = [policy.gone(r, now, held=session.held) for r in recordings]
        live = [r for r, verdict in zip(recordings, verdicts, strict=True) if verdict is None]
        if not live:
            gone = [verdict for verdict in verdicts if verdict is not None]
            if not gone and not session.held:
                # No audio ever arrived: the session itself ages out under the same policy.
                expiry, level = policy.retention_expiry(partner.retention_seconds, session)
                if policy.is_expired(expiry, now):
                    gone = [GoneDetail("expired", expiry // 1000, level)]
            if gone:
                raise gone_error(max(gone, key=lambda detail: detail.at))
        servable = [r for r in live if r.is_servable]
        if not servable:
            if any(r.status in PENDING for r in live) or not live:
                raise recording_not_ready()
            reasons = "; ".join(sorted({r.failure_reason or "unknown" for r in live}))
            raise NotFound(f"Recording processing failed: {reasons}")
        live = servable
        # Within one second the answer is the same for everyone (same expiry, same signatures):
        # players and dashboards ask in bursts, so sign once per second, not once per request.
        memo_key = (
            partner.partner_id,
            session_id,
            download,
            partner.delivery,
            tuple(r.recording_id for r in live),
        )
        second = now // 1000
        under = (second, self.cache.generation, self.keys.signer())
        if under != self._memo_under:
            # A new second, what may be served changed (a deletion, hold, retention), or the
            # keys did (a URL signed with a removed key must not be handed out again).
            self._memo_under = under
            self._memo.clear()
        links = self._memo.get(memo_key)
        if links is None:
            audio_ms = sum(r.duration_ms for r in live)
            lifetime = policy.url_lifetime_seconds(download=download, session_audio_ms=audio_ms)
            expires = second + lifetime
            mode = UrlMode.DOWNLOAD if download else UrlMode.STREAM
            links = [
                self.link(r, mode, expires, held=session.held, delivery=partner.delivery)
                for r in live
            ]
            if len(self._memo) < _MEMO_SIZE:
                self._memo[memo_key] = links
        return links

    def link(
        self,
        recording: Recording,
        mode: UrlMode,
        expires: int,
        *,
        held: bool = False,
        via: str | None = None,
        delivery: Delivery = Delivery.GATEWAY,
    ) -> RecordingLink:
        """A signed media URL for one recording, valid until ``expires`` (Unix seconds) or the
        recording's retention end, whichever comes first (``held``: its session is on hold;
        ``via``: the player link it is issued through, which its reads are logged under).
        With ``Delivery.DIRECT`` it is the store's own presigned URL (``core.delivery``); a
        player link's URLs stay the gateway's, so revoking the link stops them."""
        expires = policy.capped_expiry(expires, recording.expires_ms, held=held)
        if delivery is Delivery.DIRECT and via is None:
            url = self.direct.url(recording, expires, now_ms(self.clock) // 1000)
            if url is not None:
                return RecordingLink(recording=recording, url=url, expires_at=expires)
        query = self.keys.signer().sign(
            recording.recording_id, mode, expires, recording.partner_id, via
        )
        url = f"{self.media_base_url}/media/{recording.recording_id}.wav?{query}"
        return RecordingLink(recording=recording, url=url, expires_at=expires)

    def peaks_link(
        self,
        partner: Tenant,
        recording: Recording,
        expires_at: int,
        *,
        held: bool = False,
        via: str | None = None,
    ) -> str | None:
        """The signed URL of a recording's waveform peaks (``/media/{id}.peaks.json``, any
        resolution through ``?spp=``), valid like ``link`` until ``expires_at`` or the end of
        its retention (``via`` as for ``link``: revoking that player link stops it, and its
        reads are logged as the link's); None when it has no peaks (yet). Another tenant's
        recording: NotFound."""
        if recording.partner_id != partner.partner_id:
            raise no_recording()
        if not recording.is_servable or not has_peaks(self.store, recording.storage_key):
            return None
        expires = policy.capped_expiry(expires_at, recording.expires_ms, held=held)
        query = self.keys.signer().sign(
            recording.recording_id, UrlMode.PEAKS, expires, recording.partner_id, via
        )
        return f"{self.media_base_url}/media/{recording.recording_id}.peaks.json?{query}"

    def with_peaks(self, recordings: Sequence[Recording]) -> set[str]:
        """The ids of those of ``recordings`` whose waveform peaks are stored."""
        return {
            r.recording_id
            for r in recordings
            if r.is_servable and has_peaks(self.store, r.storage_key)
        }

    def metadata_url(self, session: Session, expires: int) -> str:
        """A signed URL of a call's metadata document (``/media/{session_id}.json``), valid
        until ``expires`` (the caller caps it at the retention of the audio it describes)."""
        query = self.keys.signer().sign(
            session.session_id, UrlMode.METADATA, expires, session.partner_id
        )
        return f"{self.media_base_url}/media/{session.session_id}.json?{query}"

    def twilio_stream_query(self, partner_id: str, expires: int) -> str:
        """The query string of a Twilio stream URL for the tenant, valid until ``expires``:
        signed by the key ring like every other URL, so ``keys remove`` revokes it."""
        return self.keys.signer().sign(TWILIO_SUBJECT, UrlMode.TWILIO, expires, partner_id)
