"""The vault's use cases: sessions, uploads, recording links and media access.

Every method takes the caller's partner (already authenticated by a dialect) and looks things up
inside that partner only; a foreign id is indistinguishable from an unknown one. Methods are
synchronous: the HTTP layer decides whether to run them on the loop (SQLite, microseconds) or in a
thread (PostgreSQL, network round trips).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ulid import ULID

from tapevault.core import events, mergeplan, policy
from tapevault.core.clock import Clock, now_ms
from tapevault.core.delivery import DirectLinks
from tapevault.core.lifecycle import PENDING
from tapevault.core.model import (
    Delivery,
    Job,
    JobKind,
    Recording,
    RecordingStatus,
    Session,
    SessionKind,
    SessionStatus,
    Tenant,
)
from tapevault.core.peaks import has_peaks, peaks_keys
from tapevault.core.ports import (
    ChannelTaken,
    MergePlanner,
    MergeQueued,
    NodeLocalFiles,
    ObjectStore,
    Repository,
    SequenceTaken,
)
from tapevault.core.quota import Quotas
from tapevault.core.signing import (
    AUDIO_MODES,
    TWILIO_SUBJECT,
    UrlGrant,
    UrlMode,
    UrlSigner,
    new_signing_key,
)
from tapevault.core.sources import stream_key, upload_key
from tapevault.core.tenants import Tenants
from tapevault.errors import (
    Conflict,
    Gone,
    GoneDetail,
    InvalidRequest,
    NotFound,
    NotReady,
    UrlRejected,
)
from tapevault.fsutil import out_of_space_as_507

log = logging.getLogger("tapevault.vault")

RECORDING_NOT_FOUND = "Recording not found or decryption in progress."
RECORDING_EXPIRED = "Recording has expired per retention policy."
RECORDING_DELETED = "Recording has been deleted."
SESSION_NOT_FOUND = "Session not found."
FORM_FILLING_PREFIX = "ffs-"
MAX_ID = 64
MAX_PROVIDER = 200  # the column's width
_KEY_RELOAD_SECONDS = 1.0
NOT_READY_RETRY_SECONDS = 2
_CALL_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")
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


def channel_taken(channel: str) -> Conflict:
    """The 409 for a second recording of a call channel (one that failed may be replaced)."""
    return Conflict(f"The {channel} channel of this call already has audio.")


def gone_error(detail: GoneDetail) -> Gone:
    """The 410 for a recording that expired (the seed's words) or was deleted."""
    return Gone(RECORDING_DELETED if detail.reason == "deleted" else RECORDING_EXPIRED, detail)


def new_session_id(kind: SessionKind) -> str:
    """Ambient ids are UUIDs; form-filling ids carry a prefix, so the two spaces never meet."""
    base = str(uuid.uuid4())
    return FORM_FILLING_PREFIX + base if kind is SessionKind.FORM_FILLING else base


class Vault:
    """Sessions, recordings and signed access, over a repository and an object store."""

    def __init__(
        self,
        repo: Repository,
        store: ObjectStore,
        clock: Clock,
        media_base_url: str,
        local: NodeLocalFiles,
        *,
        default_quota_bytes: int | None = None,
    ) -> None:
        self.repo = repo
        self.quotas = Quotas(repo, default_quota_bytes)
        self.local = local  # this node's working files (storage/node_local.py)
        # Set whenever a job is queued in this process, so an in-process worker wakes at once.
        self.jobs_waiting = threading.Event()
        self.store = store
        self.clock = clock
        self.media_base_url = media_base_url.rstrip("/")
        self.tenants = Tenants(repo, clock)
        self.direct = DirectLinks(store)
        self._recordings: dict[str, tuple[Recording, float]] = {}
        self._sessions: dict[tuple[str, str], tuple[Session, Sequence[Recording], float]] = {}
        self._links_memo: dict[
            tuple[str, str, bool, Delivery, tuple[str, ...]], list[RecordingLink]
        ] = {}
        self._memo_second = 0
        # Moves on at every ``forget``: an entry read from the database before a change was
        # heard is not cached after it (it would serve the old state for its whole lifetime).
        self._generation = 0
        self._signer_lock = threading.Lock()
        self._epoch = repo.cache_epoch()
        self.key_reload_seconds = _KEY_RELOAD_SECONDS
        self._signer = self._load_signer(None)
        self._signer_loaded = time.monotonic()

    # partners -----------------------------------------------------------------------------

    def create_tenant(self, name: str, retention_seconds: int) -> Tenant:
        """A tenant with every credential but the API key (see ``Tenants.create``)."""
        return self.tenants.create(name, retention_seconds).tenant

    # sessions -----------------------------------------------------------------------------

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
            self.merge_planner(),
            lambda s, recordings: [events.session_settled(s, recordings, ended)],
        )
        self.merge_queued(queued)
        return self.get_session(partner, session_id)

    def merge_planner(self) -> MergePlanner:
        """The rule a state change's transaction applies to queue a session's merged rendition
        (see core/mergeplan.py), with a job due now."""
        now = now_ms(self.clock)

        def plan(session: Session, recordings: Sequence[Recording]) -> tuple[Recording, Job] | None:
            rendition = mergeplan.due_merge(session, recordings, now)
            if rendition is None:
                return None
            return rendition, self.new_job(JobKind.MERGE, rendition.recording_id)

        return plan

    def merge_queued(self, queued: MergeQueued | None) -> None:
        """After a committed change queued a merge: wake the worker, remove the replaced file."""
        if queued is None:
            return
        if queued.replaced is not None:
            self.discard_object(queued.replaced)
        self.jobs_waiting.set()

    def check_accepts_audio(self, partner: Tenant, session_id: str) -> Session:
        """Raise unless the session exists for this partner and has not ended."""
        session = self.get_session(partner, session_id)
        if session.deleted_ms is not None:
            raise Conflict("The session's audio was deleted; it accepts no more audio.")
        if session.status is SessionStatus.COMPLETED:
            raise Conflict("The session has ended; it accepts no more audio.")
        return session

    # uploads ------------------------------------------------------------------------------

    def accept_upload(
        self,
        partner: Tenant,
        session_id: str,
        spooled: Path,
        source_format: str,
        *,
        channel: str | None = None,
        media_start_epoch_ms: int | None = None,
    ) -> Recording:
        """Take a validated, spooled upload into the vault: the acknowledgement point.

        The node-local body is promoted into the object store under ``incoming/`` (renamed into
        place on a local store, copied elsewhere), then the recording is inserted as PROCESSING
        together with its finalization job, in one transaction. From here on the upload
        survives a crash of the process and the loss of the node; any node's worker finishes
        it. A failure before the commit removes the incoming object again (an orphan left by a
        crash in between is swept: ``sweep_unrecorded``).
        """
        session = self.check_accepts_audio(partner, session_id)
        self.quotas.check(partner, self.local.size(spooled))
        recording_id = str(ULID())
        key = upload_key(recording_id)
        with out_of_space_as_507("the upload"):
            self.local.promote(spooled, key)
        try:
            recording = self._insert_recording(
                session=session,
                recording_id=recording_id,
                status=RecordingStatus.PROCESSING,
                source_format=source_format,
                tenant_retention=partner.retention_seconds,
                job=self.new_job(JobKind.FINALIZE, recording_id),
                channel=channel,
                media_start_epoch_ms=media_start_epoch_ms,
            )
            self._mark_in_progress(session)
        except BaseException:
            self._discard_source(key)
            raise
        self.jobs_waiting.set()
        return recording

    def _discard_source(self, key: str) -> None:
        try:
            self.store.delete(key)
        except Exception:
            log.warning("could not remove %s; the sweep will", key, exc_info=True)

    def new_job(self, kind: JobKind, recording_id: str) -> Job:
        """A job due now, not yet leased."""
        now = now_ms(self.clock)
        return Job(uuid.uuid4().hex, kind, recording_id, 0, now, None, None, None, now, None)

    def _mark_in_progress(self, session: Session) -> None:
        # ``session`` was read before the insert: an end may have landed since, so the mark
        # applies only to a session still CREATED, or it would reopen an acknowledged end.
        if session.status is SessionStatus.CREATED:
            self.repo.update_session_status(
                session.partner_id,
                session.session_id,
                SessionStatus.IN_PROGRESS,
                None,
                if_status=SessionStatus.CREATED,
            )

    def _insert_recording(
        self,
        *,
        session: Session,
        recording_id: str,
        status: RecordingStatus,
        source_format: str,
        tenant_retention: int,
        job: Job | None = None,
        channel: str | None = None,
        media_start_epoch_ms: int | None = None,
        writer_id: str | None = None,
        audio: tuple[int, int, int] = (0, 0, 0),
        spool_node: str | None = None,
    ) -> Recording:
        expires, level = policy.retention_expiry(tenant_retention, session)
        for _attempt in range(20):
            now = now_ms(self.clock)
            recording = Recording(
                recording_id=recording_id,
                session_id=session.session_id,
                partner_id=session.partner_id,
                sequence_number=self.repo.next_sequence_number(session.session_id),
                status=status,
                storage_key=f"{session.partner_id}/{session.session_id}/{recording_id}.wav",
                sample_rate=audio[0],
                channels=audio[1],
                bits_per_sample=audio[2],
                duration_ms=0,
                size_bytes=0,
                sha256="",
                created_ms=now,
                expires_ms=expires,
                retention_policy=level,
                source_format=source_format,
                channel=channel,
                media_start_epoch_ms=media_start_epoch_ms,
                writer_id=writer_id,
                heartbeat_ms=now if writer_id else None,
                spool_node=spool_node,
            )
            try:
                self.repo.add_recording(recording, job)
            except SequenceTaken:
                continue  # a concurrent upload took this number; take the next one
            except ChannelTaken as exc:
                raise channel_taken(exc.channel) from None
            return recording
        raise Conflict("Too many concurrent uploads to this session; retry.")

    # live streams ---------------------------------------------------------------------------

    def open_stream(
        self,
        partner: Tenant,
        session_id: str,
        source_format: str,
        writer_id: str,
        *,
        sample_rate: int,
        channels: int,
        bits_per_sample: int,
        channel: str | None = None,
        media_start_epoch_ms: int | None = None,
    ) -> Recording:
        """Start a RECEIVING recording for a live stream; its bytes go to this node's
        ``stream_spool`` (acknowledged once fsynced there) until it is closed.

        The stream's own format (rate, channels, sample width) is stored at once: crash
        recovery needs it to cut the file to whole frames and finish it.
        """
        session = self.check_accepts_audio(partner, session_id)
        self.quotas.check(partner, 1)  # a stream's size is unknown: it needs room to start
        recording = self._insert_recording(
            session=session,
            recording_id=str(ULID()),
            status=RecordingStatus.RECEIVING,
            source_format=source_format,
            tenant_retention=partner.retention_seconds,
            channel=channel,
            media_start_epoch_ms=media_start_epoch_ms,
            writer_id=writer_id,
            audio=(sample_rate, channels, bits_per_sample),
            spool_node=self.local.node_id,
        )
        self._mark_in_progress(session)
        return recording

    def close_stream(self, recording: Recording) -> Recording:
        """The stream ended: promote its spool into the object store, then queue the recording
        for finalization, in one transaction (a close that fails halfway must not leave it
        PROCESSING with no job). The spool is copied, not moved, and removed only once the job
        is committed, so a close that fails is retried from it. A no-op when recovery took the
        recording over meanwhile (it queued the job then; the spool stays for it)."""
        closed = replace(
            recording, status=RecordingStatus.PROCESSING, writer_id=None, heartbeat_ms=None
        )
        spool = self.local.stream_spool(recording.recording_id)
        key = stream_key(recording.recording_id)
        with out_of_space_as_507("the stream"):
            try:
                self.local.promote(spool, key, keep=True)
            except FileNotFoundError:
                # No spool here: promoted by an earlier close, or nothing was ever acknowledged.
                if self.store.stat(key) is None:
                    self.store.put(key, [])
        if self.repo.update_recording(
            closed,
            expect=RecordingStatus.RECEIVING,
            writer_id=recording.writer_id,
            job=self.new_job(JobKind.FINALIZE, recording.recording_id),
        ):
            self.local.discard(spool)
            self.jobs_waiting.set()
        return closed

    def take_over_stream(
        self, recording: Recording, *, stale_seconds: int | None, spool_wait_seconds: int = 0
    ) -> bool:
        """Recovery: mark a RECEIVING recording ``recovered`` and queue it for finalization,
        if it is still held by the writer it was read with and, unless ``stale_seconds`` is
        None (its writer is known dead), that writer's lease lapsed that long ago.

        Only the node whose disk holds the spool can finalize every acknowledged byte, so the
        job is that node's alone for ``spool_wait_seconds``; after that any node may finalize
        it, from the copy of the stream in the object store (``core/streamparts.py``)."""
        job = self.new_job(JobKind.FINALIZE, recording.recording_id)
        if recording.spool_node is not None:
            until = now_ms(self.clock) + spool_wait_seconds * 1000
            job = replace(job, node=recording.spool_node, node_until_ms=until)
        taken = self.repo.take_over_stream(
            recording.recording_id,
            recording.writer_id,
            None if stale_seconds is None else stale_seconds * 1000,
            job,
        )
        if taken:
            self.jobs_waiting.set()
        return taken

    # recording links ----------------------------------------------------------------------

    def recording_links(
        self, partner: Tenant, session_id: str, download: bool
    ) -> list[RecordingLink]:
        """Signed URLs for every servable recording of the session, by sequence number.

        404 (``NotReady``) while nothing is finished, 410 (``Gone``) once retention is over.
        """
        session: Session | None = None
        recordings: Sequence[Recording] = ()
        if 0 < len(session_id) <= MAX_ID:
            session, recordings = self._settled_session(partner.partner_id, session_id)
        if session is None:
            raise NotFound(RECORDING_NOT_FOUND)
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
                raise NotReady(RECORDING_NOT_FOUND, retry_after=NOT_READY_RETRY_SECONDS)
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
        if second != self._memo_second:
            self._memo_second = second
            self._links_memo.clear()
        links = self._links_memo.get(memo_key)
        if links is None:
            generation = self._generation
            audio_ms = sum(r.duration_ms for r in live)
            lifetime = policy.url_lifetime_seconds(download=download, session_audio_ms=audio_ms)
            expires = second + lifetime
            mode = UrlMode.DOWNLOAD if download else UrlMode.STREAM
            links = [
                self.link(r, mode, expires, held=session.held, delivery=partner.delivery)
                for r in live
            ]
            if len(self._links_memo) < _RECORDING_CACHE_SIZE and generation == self._generation:
                self._links_memo[memo_key] = links
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
        query = self.signer().sign(recording.recording_id, mode, expires, recording.partner_id, via)
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
            raise NotFound(RECORDING_NOT_FOUND)
        if not recording.is_servable or not has_peaks(self.store, recording.storage_key):
            return None
        expires = policy.capped_expiry(expires_at, recording.expires_ms, held=held)
        query = self.signer().sign(
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

    def discard_object(self, recording: Recording) -> None:
        """Remove a superseded derived file (a replaced rendition); a failure only leaves an
        orphan file behind, which is logged, never an error for the caller."""
        for key in (recording.storage_key, *peaks_keys(recording.storage_key)):
            try:
                self.store.delete(key)
            except Exception:
                log.warning("could not remove %s", key, exc_info=True)

    def metadata_url(self, session: Session, expires: int) -> str:
        """A signed URL of a call's metadata document (``/media/{session_id}.json``), valid
        until ``expires`` (the caller caps it at the retention of the audio it describes)."""
        query = self.signer().sign(
            session.session_id, UrlMode.METADATA, expires, session.partner_id
        )
        return f"{self.media_base_url}/media/{session.session_id}.json?{query}"

    def twilio_stream_query(self, partner_id: str, expires: int) -> str:
        """The query string of a Twilio stream URL for the tenant, valid until ``expires``:
        signed by the key ring like every other URL, so ``keys remove`` revokes it."""
        return self.signer().sign(TWILIO_SUBJECT, UrlMode.TWILIO, expires, partner_id)

    def authorize_twilio(self, query: dict[str, str]) -> str:
        """The tenant id a Twilio stream URL grants; raises ``UrlRejected``."""
        grant = self.signer().verify(TWILIO_SUBJECT, query, self.clock.now())
        if grant.mode is not UrlMode.TWILIO:
            raise UrlRejected("invalid", "This URL does not grant a Twilio media stream.")
        return grant.partner_id

    # media gateway ------------------------------------------------------------------------

    def authorize_media(self, recording_id: str, query: dict[str, str]) -> MediaAccess:
        """Verify a signed URL and find its recording; raises UrlRejected, NotFound or Gone."""
        return self._authorize(recording_id, query, peaks=False)

    def authorize_peaks(self, recording_id: str, query: dict[str, str]) -> MediaAccess:
        """The same checks as ``authorize_media``, for a URL of the recording's peaks."""
        return self._authorize(recording_id, query, peaks=True)

    def _authorize(self, recording_id: str, query: dict[str, str], *, peaks: bool) -> MediaAccess:
        now = self.clock.now()
        grant = self.signer().verify(recording_id, query, now)
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
        recording = self._recording(recording_id)
        if recording is None or recording.partner_id != grant.partner_id:
            raise NotFound(RECORDING_NOT_FOUND)
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
            raise NotFound(RECORDING_NOT_FOUND)
        return MediaAccess(recording=recording, grant=grant)

    def _settled_session(
        self, partner_id: str, session_id: str
    ) -> tuple[Session | None, Sequence[Recording]]:
        """The session and its recordings; from memory once they can no longer change.

        An ended session whose recordings are all finalized (available or failed) takes no more
        audio and none of its recordings changes again, so players asking for fresh URLs need not
        touch the database. Entries live a few seconds so that another process's deletions are
        seen soon; retention is computed per request from ``expires_ms`` anyway.
        """
        key = (partner_id, session_id)
        now = time.monotonic()
        hit = self._sessions.get(key)
        if hit is not None and hit[2] > now:
            return hit[0], hit[1]
        generation = self._generation
        session, recordings = self.repo.get_session_with_recordings(partner_id, session_id)
        if (
            generation == self._generation
            and session is not None
            and session.status is SessionStatus.COMPLETED
            and not any(r.status in PENDING for r in recordings)
        ):
            if len(self._sessions) >= _RECORDING_CACHE_SIZE:
                self._sessions.clear()
            self._sessions[key] = (session, recordings, now + _RECORDING_CACHE_SECONDS)
        return session, recordings

    def _recording(self, recording_id: str) -> Recording | None:
        """A finished recording never changes, so every ranged read of a playback after the
        first is answered from memory. Entries live a few seconds so that another process's
        changes (a later deletion) are seen soon; expiry is computed per request anyway."""
        now = time.monotonic()
        hit = self._recordings.get(recording_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        generation = self._generation
        recording = self.repo.get_recording(recording_id)
        if recording is not None and recording.is_servable and generation == self._generation:
            # Only servable rows are kept: a deletion or purge moves a row out of that state,
            # and the cache epoch (see ``signer``) drops every entry within a second of it.
            if len(self._recordings) >= _RECORDING_CACHE_SIZE:
                self._recordings.clear()
            self._recordings[recording_id] = (recording, now + _RECORDING_CACHE_SECONDS)
        return recording

    # signing keys -------------------------------------------------------------------------

    def _load_signer(self, current: UrlSigner | None) -> UrlSigner:
        """The signer for the keys in the database: the current one while they are unchanged,
        so its verified-signature cache and the URL memo outlive the periodic re-read."""
        keys = self.repo.list_signing_keys()
        if not keys:
            self.repo.add_signing_key(new_signing_key(None, now_ms(self.clock)))
            keys = self.repo.list_signing_keys()
        if current is not None and current.keys == tuple(keys):
            return current
        self._links_memo.clear()  # URLs signed with a key that may be gone now
        return UrlSigner(keys)

    def signer(self) -> UrlSigner:
        """The signer, re-read from the database at most ``key_reload_seconds`` apart.

        Keys are rotated and removed by other processes (``tapevault keys``); re-reading them
        on a short period makes a removal revoke its URLs everywhere within that period, and a
        rotation switch every process to the new signing key.
        """
        now = time.monotonic()
        if now - self._signer_loaded >= self.key_reload_seconds:
            with self._signer_lock:
                if now - self._signer_loaded >= self.key_reload_seconds:
                    self._signer = self._load_signer(self._signer)
                    self._check_epoch()
                    self._signer_loaded = time.monotonic()
        return self._signer

    def _check_epoch(self) -> None:
        """Drop the recording and session caches when any process changed what may be served
        (a deletion, purge, hold or retention change bumps the epoch), so such a change takes
        effect everywhere within ``key_reload_seconds``."""
        epoch = self.repo.cache_epoch()
        if epoch != self._epoch:
            self._epoch = epoch
            self.forget()

    def reload(self) -> None:
        """Another process changed what may be served (the change feed says so): re-read the
        signing keys and drop the caches now, not at the next periodic check."""
        with self._signer_lock:
            self._signer = self._load_signer(self._signer)
            self._signer_loaded = time.monotonic()
            self._epoch = self.repo.cache_epoch()
            self.forget()

    def forget(self) -> None:
        """Drop every cached recording and session (this process changed one)."""
        self._generation += 1
        self._recordings.clear()
        self._sessions.clear()
        self._links_memo.clear()

    def changed(self) -> None:
        """Tell every process (and this one, now) that servable state changed."""
        self.repo.bump_cache_epoch()
        self.forget()

    def rotate_signing_key(self) -> str:
        # The newest key signs; make "newest" unambiguous even within one millisecond.
        newest = max((k.created_ms for k in self.repo.list_signing_keys()), default=0)
        key = new_signing_key(None, max(now_ms(self.clock), newest + 1))
        self.repo.add_signing_key(key)
        self._signer = self._load_signer(self._signer)
        return key.key_id

    def remove_signing_key(self, key_id: str) -> bool:
        keys = self.repo.list_signing_keys()
        if len(keys) == 1 and keys[0].key_id == key_id:
            raise Conflict("Refusing to remove the only signing key; rotate first.")
        removed = self.repo.remove_signing_key(key_id)
        self._signer = self._load_signer(self._signer)
        return removed

    def signing_key_ids(self) -> list[str]:
        return [k.key_id for k in self.repo.list_signing_keys()]
