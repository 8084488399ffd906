"""The decisions of ``wait_until_ready`` and ``download_url``, shared by the sync and async
clients: what to wait for, when to ask for a fresh URL, when to retry and when to give up."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

import httpx

from tapevault.client._calls import Calls
from tapevault.client._download import Source
from tapevault.client._http import Retry
from tapevault.client.errors import (
    ClientError,
    Expired,
    Forbidden,
    HTTPStatusError,
    NotFound,
    NotReady,
    ServerError,
    TransportError,
)
from tapevault.client.models import MergedRecording, Recording, RecordingUrl, Session

try:
    USER_AGENT = f"tapevault-client/{version('tapevault')}"
except PackageNotFoundError:  # pragma: no cover - a copy shipped without its metadata
    USER_AGENT = "tapevault-client"

# When the server says "not yet" without saying how long to wait.
DEFAULT_WAIT = 2.0
# However soon the server says to ask again, polls stay this far apart (never a busy loop).
MIN_WAIT = 0.5
_UNSATISFIED = re.compile(r"^bytes \*/(\d{1,18})$")


def ready_wait(status: Session | None, not_ready: NotReady | None) -> float | None:
    """Seconds to wait before asking again, or None when the session is ready."""
    if not_ready is not None:
        wait = not_ready.retry_after if not_ready.retry_after is not None else DEFAULT_WAIT
        return max(wait, MIN_WAIT)
    assert status is not None
    return None if status.settled else DEFAULT_WAIT


def after_failure(error: Exception, refreshed: bool, attempt: int, retry: Retry) -> str | float:
    """After a failed download request: ``"refresh"`` (ask for a fresh URL: it expired), or
    the seconds to wait before trying again; raises when it is no use. ``attempt`` counts the
    failures in a row without a byte of progress, this one included."""
    if _url_refused(error) and not refreshed:
        return "refresh"
    if attempt < retry.attempts:
        if isinstance(error, httpx.TransportError):
            return retry.backoff(attempt)
        if isinstance(error, ServerError) or (
            isinstance(error, HTTPStatusError) and error.status == 429
        ):
            return retry.backoff(attempt, error.retry_after)
    if isinstance(error, httpx.TransportError):
        raise TransportError(f"download failed: {error!r}") from error
    raise error


def _url_refused(error: Exception) -> bool:
    """A signed URL that expired, or whose signing key was removed (``url_invalid``): a fresh
    URL may work, once."""
    if isinstance(error, Expired):
        return True
    body = error.body if isinstance(error, Forbidden) else None
    return isinstance(body, dict) and body.get("error") == "url_invalid"


def total_from_416(response: httpx.Response) -> int | None:
    """A 416's ``Content-Range: bytes */N``: the file is N bytes (asked from past its end)."""
    match = _UNSATISFIED.match(response.headers.get("content-range", ""))
    return int(match.group(1)) if match else None


def recording_source(recording: Recording) -> Source:
    return Source(
        key=f"recording:{recording.recording_id}",
        sha256=recording.sha256,
        size=recording.size_bytes,
    )


def fresh_suki_url(urls: list[RecordingUrl], recording: Recording) -> str:
    for link in urls:
        if link.recording_id == recording.recording_id:
            return link.url
    raise NotFound(404, f"recording {recording.recording_id} is no longer served")


def fresh_kore_url(merged: MergedRecording) -> str:
    if merged.status == "success" and merged.file_url:
        return merged.file_url
    if merged.status in ("call_in_progress", "media_in_progress"):
        raise NotReady(404, merged.status, retry_after=merged.retry_after)
    raise NotFound(404, merged.message or merged.status)


def call_source(
    calls: Calls, call_sid: str, channel: str, sha256: str | None
) -> tuple[Source, str]:
    """Amigo's download route for one channel: a stable URL with the API key."""
    if channel not in ("inbound", "outbound"):
        raise ClientError(f"channel must be inbound or outbound, not {channel!r}")
    path = calls.call_download_path(call_sid, f"{channel}.wav")
    headers = tuple(calls.creds.bearer().items())
    return Source(key=f"call:{call_sid}:{channel}", sha256=sha256, headers=headers), path
