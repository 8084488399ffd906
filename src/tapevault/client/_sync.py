"""The blocking client. ``AsyncClient`` (``_async.py``) is the same, line for line, with
``await``; change both together."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tapevault.client._calls import Call, Calls, Credentials
from tapevault.client._download import (
    CHUNK_BYTES,
    PartFile,
    Progress,
    Progressing,
    Source,
    range_headers,
    read_answer,
)
from tapevault.client._http import Retry, error_for, retry_after, retryable
from tapevault.client._plan import (
    USER_AGENT,
    after_failure,
    call_source,
    fresh_kore_url,
    fresh_suki_url,
    ready_wait,
    recording_source,
    total_from_416,
)
from tapevault.client.errors import ClientError, Gone, NotReady, TransportError
from tapevault.client.models import (
    AuditPage,
    CallMetadata,
    CallUrls,
    MergedRecording,
    NativeSession,
    Recording,
    RecordingUrl,
    Session,
)

T = TypeVar("T")


class Client:
    """A tapevault client for every dialect; give it the credentials you have.

    ``suki_token`` for sessions and recording URLs, ``api_key`` (+ ``workspace_id`` for
    Amigo's routes) for calls and the native API, ``kore_token`` + ``bot_id`` for Kore's
    merged recordings. Failures raise leaves of ``tapevault.client.errors.ClientError``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        suki_token: str | None = None,
        api_key: str | None = None,
        workspace_id: str | None = None,
        kore_token: str | None = None,
        bot_id: str | None = None,
        timeout: float = 30.0,
        retry: Retry | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.calls = Calls(Credentials(suki_token, api_key, workspace_id, kore_token, bot_id))
        self.retry = retry or Retry()
        self.chunk_bytes = chunk_bytes
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers={"user-agent": USER_AGENT},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one request, with retries ---------------------------------------------------------------

    def run(self, call: Call[T]) -> T:
        """Send ``call`` (retrying what may be retried) and read its answer."""
        return call.read(self._send(call))

    def _send(self, call: Call[Any]) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                if isinstance(call.body, Path):
                    with call.body.open("rb") as f:
                        response = self._request(call, f)
                else:
                    response = self._request(call, call.body)
            except httpx.TransportError as exc:
                if attempt < self.retry.attempts and retryable(call.method, None, exc):
                    self._sleep(self.retry.backoff(attempt))
                    continue
                raise TransportError(f"{call.method} {call.path}: {exc!r}") from exc
            if response.is_success:
                return response
            if attempt < self.retry.attempts and retryable(call.method, response, None):
                self._sleep(self.retry.backoff(attempt, retry_after(response)))
                continue
            raise error_for(response)

    def _request(self, call: Call[Any], content: Any) -> httpx.Response:
        return self._http.request(
            call.method,
            call.path,
            headers=call.headers,
            params=call.params,
            json=call.json,
            content=content,
        )

    # --- Suki ------------------------------------------------------------------------------------

    def create_session(self, *, form_filling: bool = False) -> str:
        return self.run(self.calls.create_session(form_filling))

    def upload(
        self, session_id: str, audio: bytes | Path, *, content_type: str | None = None
    ) -> str:
        """Upload a file (or bytes) as the session's next recording; its recording id."""
        return self.run(self.calls.upload(session_id, audio, content_type))

    def end(self, session_id: str) -> Session:
        return self.run(self.calls.end(session_id))

    def status(self, session_id: str) -> Session:
        return self.run(self.calls.status(session_id))

    def recording_urls(self, session_id: str, *, download: bool = False) -> list[RecordingUrl]:
        return self.run(self.calls.recording_urls(session_id, download))

    def wait_until_ready(self, session: str | Session, *, timeout: float = 300.0) -> Session:
        """Wait until the session's recordings can be fetched and none is still processing,
        and return its status. Follows the server's 404 ``Retry-After``; a 410 (``Gone``) or a
        plain 404 (``NotFound``) ends it at once; ``NotReady`` when ``timeout`` runs out."""
        session_id = session if isinstance(session, str) else session.session_id
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.recording_urls(session_id)
                status = self.status(session_id)
                wait = ready_wait(status, None)
            except NotReady as exc:
                wait = ready_wait(None, exc)
            if wait is None:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotReady(404, f"{session_id} not ready after {timeout:g} s")
            self._sleep(min(wait, remaining))

    def download(
        self, recording: Recording, path: str | Path, *, progress: Progress | None = None
    ) -> Path:
        """Download a recording of a session's status to ``path`` (resumable; see
        ``download_url``) and check its size and sha256."""

        def fresh() -> str:
            urls = self.recording_urls(recording.session_id, download=True)
            return fresh_suki_url(urls, recording)

        return self.download_url(recording_source(recording), fresh, path, progress=progress)

    # --- Amigo -----------------------------------------------------------------------------------

    def call_urls(self, call_sid: str) -> CallUrls:
        return self.run(self.calls.call_urls(call_sid))

    def call_metadata(self, call_sid: str) -> CallMetadata:
        return self.run(self.calls.call_metadata(call_sid))

    def download_call(
        self,
        call_sid: str,
        channel: str,
        path: str | Path,
        *,
        sha256: str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Download one channel (``inbound`` or ``outbound``) of a call through Amigo's
        download route. Amigo publishes no digest: pass ``sha256`` (the native ``session()``
        has it) to have it checked."""
        source, url = call_source(self.calls, call_sid, channel, sha256)

        def fresh() -> str:
            return url

        return self.download_url(source, fresh, path, progress=progress)

    # --- Kore ------------------------------------------------------------------------------------

    def merged(self, session_id: str, *, user_id: str | None = None) -> MergedRecording:
        return self.run(self.calls.merged(session_id, user_id))

    def download_merged(
        self, session_id: str, path: str | Path, *, progress: Progress | None = None
    ) -> Path:
        """Download Kore's merged recording (``NotReady`` while it is being made)."""

        def fresh() -> str:
            return fresh_kore_url(self.merged(session_id))

        return self.download_url(Source(key=f"kore:{session_id}"), fresh, path, progress=progress)

    # --- native ----------------------------------------------------------------------------------

    def session(self, session_id: str) -> NativeSession:
        return self.run(self.calls.session(session_id))

    def hold(self, session_id: str, reason: str, *, by: str | None = None) -> Any:
        return self.run(self.calls.hold(session_id, reason, by))

    def release(self, session_id: str) -> Any:
        return self.run(self.calls.release(session_id))

    def set_retention(self, session_id: str, retention: str | None) -> NativeSession:
        return self.run(self.calls.set_retention(session_id, retention))

    def delete(self, session_id: str) -> Any:
        return self.run(self.calls.delete(session_id))

    def audit(self, *, cursor: str | None = None, limit: int = 100, **filters: str) -> AuditPage:
        return self.run(self.calls.audit(cursor, limit, **filters))

    # --- downloading -----------------------------------------------------------------------------

    def download_url(
        self,
        source: Source,
        fresh_url: Callable[[], str],
        path: str | Path,
        *,
        progress: Progress | None = None,
    ) -> Path:
        """Download into ``path`` by ranged requests of ``chunk_bytes``, continuing a
        ``.part`` left by an earlier run (``Range`` + ``If-Range``), asking ``fresh_url()``
        again when the URL expires, retrying connection errors and 5xx with backoff; then
        check the size and sha256 and move the file into place."""
        with PartFile(Path(path), source) as part:
            if part.verified():
                part.discard()  # the lock's empty .part
                return part.target
            try:
                state = Progressing(part.resume(), source.size)
                state.done = state.total is not None and state.offset >= state.total
                url = fresh_url()
                failures, refreshed = 0, False
                while not state.done:
                    before = state.offset
                    try:
                        error = self._chunk(url, source, part, state, progress)
                    except httpx.TransportError as exc:
                        error = exc
                    if error is None:
                        failures, refreshed = 0, False
                        continue
                    if state.offset > before:
                        failures = 0  # a connection lost after some bytes: progress all the same
                    step = after_failure(error, refreshed, failures + 1, self.retry)
                    if isinstance(step, str):  # "refresh"
                        url, refreshed = fresh_url(), True
                        continue
                    failures += 1
                    self._sleep(step)
                return part.finish(state.offset)
            except Gone:
                part.discard()  # never to be completed: no partial audio left behind
                raise

    def _chunk(
        self,
        url: str,
        source: Source,
        part: PartFile,
        state: Progressing,
        progress: Progress | None,
    ) -> Exception | None:
        """Ask for the next range and write what comes into the ``.part``; the error answer,
        or None when it went well."""
        headers = {
            **dict(source.headers),
            **range_headers(state.offset, part.etag, self.chunk_bytes),
        }
        with self._http.stream("GET", url, headers=headers) as response:
            if response.status_code in (200, 206):
                state.take(read_answer(response, state.offset), part)
                wrote_any = False
                with part.open_at(state.offset) as f:
                    for block in response.iter_bytes():
                        f.write(block)
                        f.flush()  # what progress reports is in the file, should we be killed
                        state.wrote(len(block))
                        wrote_any = True
                        if progress:
                            progress(state.offset, state.total)
                state.body_ended(wrote_any)
                return None
            response.read()
            if response.status_code == 416 and state.unsatisfiable(total_from_416(response), part):
                return None
            return error_for(response)

    def fetch(
        self,
        session_id: str,
        out_dir: str | Path,
        *,
        timeout: float = 300.0,
        progress: Callable[[Recording, int, int | None], None] | None = None,
    ) -> list[Path]:
        """Wait for a session and download every available recording into ``out_dir`` (as
        ``<session>-<sequence>.wav``); re-running continues where an earlier run stopped."""
        status = self.wait_until_ready(session_id, timeout=timeout)
        paths = []
        for recording in status.recordings:
            if recording.status != "available":
                continue
            report = _per_recording(progress, recording) if progress else None
            paths.append(
                self.download(recording, Path(out_dir) / recording.filename, progress=report)
            )
        if not paths:
            raise ClientError(f"{session_id} has no available recording")
        return paths


def _per_recording(
    progress: Callable[[Recording, int, int | None], None], recording: Recording
) -> Progress:
    def report(done: int, total: int | None) -> None:
        progress(recording, done, total)

    return report
