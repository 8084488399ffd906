"""A Python client for tapevault: the Suki, Amigo and Kore dialects and the native API, sync
(``Client``) and async (``AsyncClient``) on httpx, with typed results.

    with Client("https://audio.example.org", suki_token=token) as client:
        status = client.wait_until_ready(session_id)
        for recording in status.recordings:
            client.download(recording, f"out/{recording.filename}")

``download`` resumes an interrupted download (a ``.part`` file, ``Range`` + ``If-Range``),
replaces a URL that expires on the way, retries connection errors and 5xx with backoff and
jitter, and checks the recording's sha256. Errors are leaves of ``errors.ClientError``.

It imports nothing of the server (``tapevault.core`` and the rest): only httpx.
"""

from tapevault.client._async import AsyncClient
from tapevault.client._download import Progress, Source
from tapevault.client._http import Retry
from tapevault.client._sync import Client
from tapevault.client.errors import (
    AuthFailed,
    BadRequest,
    ClientError,
    Conflict,
    Expired,
    Forbidden,
    Gone,
    HTTPStatusError,
    IntegrityError,
    NotFound,
    NotReady,
    ProtocolError,
    ServerError,
    TransportError,
    Unavailable,
)
from tapevault.client.models import (
    AuditPage,
    CallMetadata,
    CallUrls,
    Hold,
    MergedRecording,
    NativeSession,
    Recording,
    RecordingUrl,
    Session,
)

__all__ = [
    "AsyncClient",
    "AuditPage",
    "AuthFailed",
    "BadRequest",
    "CallMetadata",
    "CallUrls",
    "Client",
    "ClientError",
    "Conflict",
    "Expired",
    "Forbidden",
    "Gone",
    "HTTPStatusError",
    "Hold",
    "IntegrityError",
    "MergedRecording",
    "NativeSession",
    "NotFound",
    "NotReady",
    "Progress",
    "ProtocolError",
    "Recording",
    "RecordingUrl",
    "Retry",
    "ServerError",
    "Session",
    "Source",
    "TransportError",
    "Unavailable",
]
