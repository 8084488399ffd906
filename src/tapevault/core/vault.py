"""The vault's use cases: sessions, uploads, recording links and media access.

Every method takes the caller's partner (already authenticated by a dialect) and looks things up
inside that partner only; a foreign id is indistinguishable from an unknown one. Methods are
synchronous: the HTTP layer decides whether to run them on the loop (SQLite, microseconds) or in a
thread (PostgreSQL, network round trips).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ulid import ULID

from tapevault.core import policy
from tapevault.core.clock import Clock, now_ms
from tapevault.core.model import (
    Partner,
    Recording,
    RecordingStatus,
    Session,
    SessionKind,
    SessionStatus,
)
from tapevault.core.ports import ObjectStore, Repository, SequenceTaken
from tapevault.core.signing import UrlGrant, UrlMode, UrlSigner, new_signing_key
from tapevault.core.wav import parse_wav, write_canonical
from tapevault.errors import Conflict, Gone, GoneDetail, NotFound, NotReady, UrlRejected

RECORDING_NOT_FOUND = "Recording not found or decryption in progress."
RECORDING_EXPIRED = "Recording has expired per retention policy."
SESSION_NOT_FOUND = "Session not found."
FORM_FILLING_PREFIX = "ffs-"
_MAX_ID = 64
_KEY_RELOAD_SECONDS = 1.0
_RECORDING_CACHE_SECONDS = 5.0
_RECORDING_CACHE_SIZE = 50_000


@dataclass(frozen=True, slots=True)
class RecordingLink:
    """One entry of the Suki recording response."""

    recording: Recording
    url: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class MediaAccess:
    """A verified right to read one recording's bytes."""

    recording: Recording
    grant: UrlGrant


def new_session_id(kind: SessionKind) -> str:
    """Ambient ids are UUIDs; form-filling ids carry a prefix, so the two spaces never meet."""
    base = str(uuid.uuid4())
    return FORM_FILLING_PREFIX + base if kind is SessionKind.FORM_FILLING else base


class Vault:
    """Sessions, recordings and signed access, over a repository and an object store."""

    def __init__(
        self, repo: Repository, store: ObjectStore, clock: Clock, media_base_url: str
    ) -> None:
        self.repo = repo
        self.store = store
        self.clock = clock
        self.media_base_url = media_base_url.rstrip("/")
        self._recordings: dict[str, tuple[Recording, float]] = {}
        self._signer_lock = threading.Lock()
        self._signer = self._load_signer()
        self._signer_loaded = time.monotonic()

    # partners -----------------------------------------------------------------------------

    def create_partner(self, name: str, retention_seconds: int) -> Partner:
        partner = Partner(
            partner_id=uuid.uuid4().hex,
            name=name,
            jwt_secret=secrets.token_urlsafe(32),
            retention_seconds=retention_seconds,
            created_ms=now_ms(self.clock),
        )
        self.repo.create_partner(partner)
        return partner

    # sessions -----------------------------------------------------------------------------

    def create_session(self, partner: Partner, kind: SessionKind) -> Session:
        session = Session(
            session_id=new_session_id(kind),
            partner_id=partner.partner_id,
            kind=kind,
            status=SessionStatus.CREATED,
            created_ms=now_ms(self.clock),
        )
        self.repo.create_session(session)
        return session

    def get_session(self, partner: Partner, session_id: str) -> Session:
        session = None
        if 0 < len(session_id) <= _MAX_ID:
            session = self.repo.get_session(partner.partner_id, session_id)
        if session is None:
            raise NotFound(SESSION_NOT_FOUND)
        return session

    def session_with_recordings(
        self, partner: Partner, session_id: str
    ) -> tuple[Session, Sequence[Recording]]:
        session = self.get_session(partner, session_id)
        return session, self.repo.list_recordings(partner.partner_id, session_id)

    def end_session(self, partner: Partner, session_id: str) -> Session:
        """Idempotent: ending an ended session returns it unchanged."""
        session = self.get_session(partner, session_id)
        if session.status is SessionStatus.COMPLETED:
            return session
        ended = now_ms(self.clock)
        self.repo.update_session_status(
            partner.partner_id, session_id, SessionStatus.COMPLETED, ended
        )
        return self.get_session(partner, session_id)

    def check_accepts_audio(self, partner: Partner, session_id: str) -> Session:
        """Raise unless the session exists for this partner and has not ended."""
        session = self.get_session(partner, session_id)
        if session.status is SessionStatus.COMPLETED:
            raise Conflict("The session has ended; it accepts no more audio.")
        return session

    # uploads ------------------------------------------------------------------------------

    def ingest_wav(self, partner: Partner, session_id: str, spooled: Path) -> Recording:
        """Validate a spooled WAV body and store it as the session's next recording.

        Either the recording is fully stored and listed, or nothing is: a parse failure stores
        nothing, and a failure after the audio was written removes it again.
        """
        session = self.check_accepts_audio(partner, session_id)
        recording_id = str(ULID())
        key = f"{partner.partner_id}/{session_id}/{recording_id}.wav"
        with spooled.open("rb") as src:
            info = parse_wav(src, spooled.stat().st_size)
            digest = hashlib.sha256()
            stored = self.store.put(key, _hashing(write_canonical(src, info), digest))
        try:
            recording = self._insert_recording(
                session=session,
                recording_id=recording_id,
                key=key,
                sample_rate=info.fmt.sample_rate,
                channels=info.fmt.channels,
                bits=info.fmt.bits_per_sample,
                duration_ms=info.duration_ms,
                size=stored.size,
                sha256=digest.hexdigest(),
                retention_seconds=partner.retention_seconds,
            )
            if session.status is SessionStatus.CREATED:
                self.repo.update_session_status(
                    partner.partner_id, session_id, SessionStatus.IN_PROGRESS, None
                )
        except BaseException:
            self.store.delete(key)
            raise
        return recording

    def _insert_recording(
        self,
        *,
        session: Session,
        recording_id: str,
        key: str,
        sample_rate: int,
        channels: int,
        bits: int,
        duration_ms: int,
        size: int,
        sha256: str,
        retention_seconds: int,
    ) -> Recording:
        for _attempt in range(20):
            recording = Recording(
                recording_id=recording_id,
                session_id=session.session_id,
                partner_id=session.partner_id,
                sequence_number=self.repo.next_sequence_number(session.session_id),
                status=RecordingStatus.AVAILABLE,
                storage_key=key,
                sample_rate=sample_rate,
                channels=channels,
                bits_per_sample=bits,
                duration_ms=duration_ms,
                size_bytes=size,
                sha256=sha256,
                created_ms=now_ms(self.clock),
                expires_ms=policy.retention_expiry_ms(session.created_ms, retention_seconds),
            )
            try:
                self.repo.add_recording(recording)
            except SequenceTaken:
                continue  # a concurrent upload took this number; take the next one
            return recording
        raise Conflict("Too many concurrent uploads to this session; retry.")

    # recording links ----------------------------------------------------------------------

    def recording_links(
        self, partner: Partner, session_id: str, download: bool
    ) -> list[RecordingLink]:
        """Signed URLs for every servable recording of the session, by sequence number.

        404 (``NotReady``) while nothing is finished, 410 (``Gone``) once retention is over.
        """
        session: Session | None = None
        recordings: Sequence[Recording] = ()
        if 0 < len(session_id) <= _MAX_ID:
            session, recordings = self.repo.get_session_with_recordings(
                partner.partner_id, session_id
            )
        if session is None:
            raise NotFound(RECORDING_NOT_FOUND)
        now = now_ms(self.clock)
        session_expiry = policy.retention_expiry_ms(session.created_ms, partner.retention_seconds)
        live = [r for r in recordings if not policy.is_expired(r.expires_ms, now)]
        if not live:
            if recordings or policy.is_expired(session_expiry, now):
                expired_at = max((r.expires_ms for r in recordings), default=session_expiry)
                raise Gone(RECORDING_EXPIRED, GoneDetail("expired", expired_at // 1000))
            raise NotReady(RECORDING_NOT_FOUND, retry_after=5)
        audio_ms = sum(r.duration_ms for r in live)
        lifetime = policy.url_lifetime_seconds(download=download, session_audio_ms=audio_ms)
        expires = now // 1000 + lifetime
        mode = UrlMode.DOWNLOAD if download else UrlMode.STREAM
        signer = self._signer
        return [
            RecordingLink(
                recording=r,
                url=f"{self.media_base_url}/media/{r.recording_id}.wav?"
                + signer.sign(r.recording_id, mode, expires, partner.partner_id),
                expires_at=expires,
            )
            for r in live
        ]

    # media gateway ------------------------------------------------------------------------

    def authorize_media(self, recording_id: str, query: dict[str, str]) -> MediaAccess:
        """Verify a signed URL and find its recording; raises UrlRejected, NotFound or Gone."""
        now = self.clock.now()
        try:
            grant = self._signer.verify(recording_id, query, now)
        except UrlRejected:
            if not self._maybe_reload_signer(query.get("k", "")):
                raise
            grant = self._signer.verify(recording_id, query, now)
        recording = self._recording(recording_id)
        if recording is None or recording.partner_id != grant.partner_id:
            raise NotFound(RECORDING_NOT_FOUND)
        if policy.is_expired(recording.expires_ms, int(now * 1000)):
            raise Gone(RECORDING_EXPIRED, GoneDetail("expired", recording.expires_ms // 1000))
        return MediaAccess(recording=recording, grant=grant)

    def _recording(self, recording_id: str) -> Recording | None:
        """A finished recording never changes, so every ranged read of a playback after the
        first is answered from memory. Entries live a few seconds so that another process's
        changes (a later deletion) are seen soon; expiry is computed per request anyway."""
        now = time.monotonic()
        hit = self._recordings.get(recording_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        recording = self.repo.get_recording(recording_id)
        if recording is not None:
            if len(self._recordings) >= _RECORDING_CACHE_SIZE:
                self._recordings.clear()
            self._recordings[recording_id] = (recording, now + _RECORDING_CACHE_SECONDS)
        return recording

    # signing keys -------------------------------------------------------------------------

    def _load_signer(self) -> UrlSigner:
        keys = self.repo.list_signing_keys()
        if not keys:
            self.repo.add_signing_key(new_signing_key(None, now_ms(self.clock)))
            keys = self.repo.list_signing_keys()
        return UrlSigner(keys)

    def _maybe_reload_signer(self, key_id: str) -> bool:
        """Reload keys when a URL names a key we do not know: another process may have rotated.

        Rate-limited, so a flood of forged key ids cannot turn into a flood of queries.
        """
        if key_id in self._signer.key_ids:
            return False
        with self._signer_lock:
            if time.monotonic() - self._signer_loaded < _KEY_RELOAD_SECONDS:
                return False
            self._signer = self._load_signer()
            self._signer_loaded = time.monotonic()
        return key_id in self._signer.key_ids

    def rotate_signing_key(self) -> str:
        # The newest key signs; make "newest" unambiguous even within one millisecond.
        newest = max((k.created_ms for k in self.repo.list_signing_keys()), default=0)
        key = new_signing_key(None, max(now_ms(self.clock), newest + 1))
        self.repo.add_signing_key(key)
        self._signer = self._load_signer()
        return key.key_id

    def remove_signing_key(self, key_id: str) -> bool:
        keys = self.repo.list_signing_keys()
        if len(keys) == 1 and keys[0].key_id == key_id:
            raise Conflict("Refusing to remove the only signing key; rotate first.")
        removed = self.repo.remove_signing_key(key_id)
        self._signer = self._load_signer()
        return removed

    def signing_key_ids(self) -> list[str]:
        return [k.key_id for k in self.repo.list_signing_keys()]


def _hashing(chunks: Iterable[bytes], digest: hashlib._Hash) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
