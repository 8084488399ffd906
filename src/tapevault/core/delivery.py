"""Direct delivery: a tenant's recordings handed out as the object store's own presigned URLs.

In ``Delivery.DIRECT`` the URL a dialect returns (Suki's ``presigned_url``, Amigo's and Kore's
recording URLs) is signed by the store (S3 SigV4, GCS V4, Azure SAS) for the same lifetime a
gateway URL would have, capped at the recording's retention end like every URL. The store then
answers Range requests itself, so the object must already carry the headers a player and a
browser need: obstore cannot add response-header overrides when signing
(apache/arrow-rs-object-store#791), so ``media_attributes`` are written on the object when it is
put (``put_recording``), for every tenant, so that switching a tenant to direct later needs no
rewrite of what it has stored since.

What the tenant gives up is in README "Object storage": single reads are not in tapevault's log
(the issuance is), a URL cannot be withdrawn before it expires, and retention and deletion are
enforced when a URL is issued.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tapevault.core.model import Delivery, Recording, Tenant
from tapevault.core.ports import MediaAttributes, ObjectInfo, Presign, Put, PutMedia

log = logging.getLogger("tapevault.delivery")

AUDIO_TYPE = "audio/wav"


def media_filename(recording: Recording) -> str:
    """The name a browser saves a recording under (the gateway's download name too)."""
    suffix = recording.channel if recording.sequence_number == 0 else recording.sequence_number
    return f"{recording.session_id}-{suffix}.wav"


def media_attributes(recording: Recording) -> MediaAttributes:
    return MediaAttributes(content_type=AUDIO_TYPE, filename=media_filename(recording))


def put_recording(store: Put, recording: Recording, chunks: Iterable[bytes]) -> ObjectInfo:
    """Store a recording's audio under its key, described for direct delivery when the store
    takes descriptions (a store without ``PutMedia`` gets a plain put)."""
    if isinstance(store, PutMedia):
        return store.put_media(recording.storage_key, chunks, media_attributes(recording))
    return store.put(recording.storage_key, chunks)


class DirectLinks:
    """The store's own URLs, when the store can sign them."""

    def __init__(self, store: object) -> None:
        self._signer = store if isinstance(store, Presign) else None
        self._warned = False

    @property
    def available(self) -> bool:
        """Whether this store presigns (object stores do; a local directory does not)."""
        return self._signer is not None

    def access_mode(self, tenant: Tenant, mode: str) -> str:
        """The access record's mode for URLs issued to ``tenant``: ``direct_stream`` (and so
        on) when the store will serve them, so the log says which reads it will not see."""
        if tenant.delivery is Delivery.DIRECT and self.available:
            return f"direct_{mode}"
        return mode

    def url(self, recording: Recording, expires: int, now_seconds: int) -> str | None:
        """A presigned GET of the recording valid until ``expires`` (Unix seconds); None when
        the store cannot sign (the caller then issues a gateway URL: a tenant set to direct on
        a server since moved to a local store still gets working links)."""
        if self._signer is None:
            if not self._warned:
                log.warning("a tenant asks for direct delivery but the store cannot presign")
                self._warned = True
            return None
        return self._signer.presign(recording.storage_key, max(1, expires - now_seconds))
