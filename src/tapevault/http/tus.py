"""Resumable uploads: the tus 1.0.0 protocol (core, creation, expiration, termination).

A thin, raw-ASGI protocol layer over ``tapevault.ingest.tus_store.TusStore``. It knows nothing of
sessions or recordings: it authenticates through ``authenticate`` (headers -> owner id) and, once
an upload's offset reaches its length, hands the bytes to ``on_complete`` exactly once. The owner of
the app turns that into a recording, exactly like a plain upload.

Two paths, one endpoint (see ``TusEndpoint.routes``):

- ``{base_path}``              POST (creation), OPTIONS (discovery)
- ``{base_path}/{upload_id}``  HEAD (offset), PATCH (append), DELETE (termination), OPTIONS

Wire rules (https://tus.io/protocols/resumable-upload):

- ``Tus-Resumable: 1.0.0`` is required on every request but OPTIONS (else 412 with
  ``Tus-Version``) and sent on every response; ``X-HTTP-Method-Override`` replaces the method.
- POST needs ``Upload-Length`` (``Upload-Defer-Length`` is not supported: 400; over
  ``Tus-Max-Size``: 413) and ``Upload-Metadata`` carrying ``session_id`` (the session the recording
  joins; ``filename`` and ``filetype`` are optional); 201 with an absolute ``Location`` and
  ``Upload-Expires``. Creation-with-upload is not offered: a POST body is refused (400).
- PATCH needs ``Content-Type: application/offset+octet-stream`` (415) and the current
  ``Upload-Offset`` (409); the body is streamed to disk chunk by chunk and fsynced before the 204,
  and the bytes of a body cut off by a dropped connection are kept, which is what makes resuming
  work. Each PATCH moves ``Upload-Expires`` forward (sliding expiry). A body that goes silent for
  ``body_timeout`` seconds is cut off with 408, its bytes kept, so a dead connection does not hold
  the upload (and block its resume) until TCP notices.
- Completion: tus gives the final PATCH no body, so it answers 204 with ``Upload-Offset`` like any
  other; the recording appears in the session (GET the session), and when ``on_complete`` returns
  ``{"recording_id": ...}`` the response also carries ``Tapevault-Recording-Id``. If
  ``on_complete`` rejects the data (any 4xx tapevault error, e.g. ``InvalidAudio`` -> 400,
  ``UnsupportedMediaType`` -> 415) the upload is terminated, so nothing half-ingested stays. Any
  other failure (500) keeps the bytes, unless the callback had already moved them away, and the
  completion is retried by the next HEAD (which is how a resuming client looks, and a client that
  sees offset == length sends nothing more) or by an empty PATCH at offset == length. Such a
  PATCH on a completed upload answers 204 again, with the same recording id.
- Unknown and other owners' uploads are 404 alike; an expired upload not yet swept is 410; a PATCH
  or DELETE while another PATCH writes the same upload is 423 (clients retry).
- Errors are ``{"code": <status>, "message": "..."}`` (the Suki shape), made in ``tus_error``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from tapevault.core.clock import Clock
from tapevault.errors import (
    Conflict,
    Gone,
    GoneDetail,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TapevaultError,
    UnsupportedMediaType,
)
from tapevault.http.asgi import (
    NO_STORE,
    NOSNIFF,
    Receive,
    Scope,
    Send,
    client_ip,
    note_tenant,
    scope_request_id,
    send_json,
)
from tapevault.http.asgi import request_headers as read_headers
from tapevault.http.errors import code_message_error
from tapevault.ingest.tus_store import OffsetMismatch, TusStore, Upload, UploadBusy, UploadWriter

log = logging.getLogger("tapevault.http")

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,expiration,termination"
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
DEFAULT_BASE_PATH = "/api/v1/uploads"
DEFAULT_EXPIRES_SECONDS = 24 * 3600
RECORDING_HEADER = b"tapevault-recording-id"
MAX_METADATA_CHARS = 8192

COLLECTION_METHODS = ("POST", "OPTIONS")
RESOURCE_METHODS = ("HEAD", "PATCH", "DELETE", "OPTIONS")

_TUS_RESUMABLE = (b"tus-resumable", TUS_VERSION.encode())
_TUS_VERSION = (b"tus-version", TUS_VERSION.encode())
_DIGITS = re.compile(r"[0-9]{1,19}")
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)

Headers = list[tuple[bytes, bytes]]
Authenticate = Callable[[dict[str, str]], Awaitable[str]]
OnComplete = Callable[[str, str, Path, dict[str, str]], Awaitable[dict[str, Any]]]
Validate = Callable[[str, dict[str, str]], Awaitable[None]]


class VersionMismatch(InvalidRequest):
    """The request lacks ``Tus-Resumable: 1.0.0``."""

    def __init__(self, got: str | None) -> None:
        super().__init__(
            "Missing Tus-Resumable header; this server speaks tus 1.0.0."
            if got is None
            else f"Tus-Resumable {got!r} is not supported; this server speaks tus 1.0.0."
        )


class BodyTimeout(InvalidRequest):
    """No byte of the PATCH body arrived for ``body_timeout`` seconds."""

    def __init__(self, offset: int) -> None:
        super().__init__(
            f"The request body stalled; {offset} bytes are stored. HEAD the upload and resume."
        )


class MethodNotAllowed(InvalidRequest):
    def __init__(self, method: str, allow: tuple[str, ...]) -> None:
        super().__init__(f"Method {method} not allowed.")
        self.allow = allow


@dataclass(frozen=True, slots=True)
class TusEvent:
    """One answered request, for the access log. Ids only: never a token or a header dump."""

    method: str
    status: int
    owner: str | None
    upload_id: str | None
    session_id: str | None
    offset: int | None
    recording_id: str | None
    error: str | None
    client_ip: str | None
    user_agent: str | None
    request_id: str | None


def tus_error(exc: BaseException) -> tuple[int, dict[str, Any], Headers]:
    """The one place where errors become tus HTTP answers."""
    headers: Headers = []
    match exc:
        case VersionMismatch():
            status = 412
            headers.append(_TUS_VERSION)
        case MethodNotAllowed(allow=allow):
            status = 405
            headers.append((b"allow", ", ".join(allow).encode()))
        case BodyTimeout():
            status = 408
        case UploadBusy():
            status = 423
        case _:
            return code_message_error(exc)
    return status, {"code": status, "message": getattr(exc, "message", str(exc))}, headers


# --- Upload-Metadata -----------------------------------------------------------------------------


def parse_metadata(value: str) -> dict[str, str]:
    """``key base64value,key2 base64value2``; a key may stand alone (empty value)."""
    if len(value) > MAX_METADATA_CHARS:
        raise InvalidRequest(f"Upload-Metadata is longer than {MAX_METADATA_CHARS} characters.")
    metadata: dict[str, str] = {}
    if not value.strip():
        return metadata
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        key = parts[0]
        if len(parts) > 2 or not key or not key.isascii() or not key.isprintable():
            raise InvalidRequest(f"Upload-Metadata pair {pair.strip()!r} is malformed.")
        if key in metadata:
            raise InvalidRequest(f"Upload-Metadata key {key!r} appears twice.")
        try:
            decoded = base64.b64decode(parts[1] if len(parts) == 2 else "", validate=True)
            metadata[key] = decoded.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidRequest(
                f"Upload-Metadata value of {key!r} is not base64-encoded UTF-8."
            ) from None
    return metadata


def encode_metadata(metadata: Mapping[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode('ascii')}" if value else key
        for key, value in metadata.items()
    )


def check_metadata(metadata: Mapping[str, str]) -> str:
    """Validate what tapevault needs from the metadata; return the session id."""
    session_id = metadata.get("session_id")
    if not session_id:
        raise InvalidRequest(
            "Upload-Metadata must carry session_id (the session the recording joins)."
        )
    if _SESSION_ID.fullmatch(session_id) is None:
        raise InvalidRequest("Upload-Metadata session_id is not a valid session id.")
    filename = metadata.get("filename")
    if filename is not None and (len(filename) > 255 or not filename.isprintable()):
        raise InvalidRequest("Upload-Metadata filename is not a valid file name.")
    filetype = metadata.get("filetype")
    if filetype is not None and _MEDIA_TYPE.fullmatch(filetype) is None:
        raise InvalidRequest("Upload-Metadata filetype is not a media type.")
    return session_id


# --- the endpoint --------------------------------------------------------------------------------


class TusEndpoint:
    """A raw ASGI endpoint serving both tus paths (``routes`` gives them)."""

    def __init__(
        self,
        store: TusStore,
        authenticate: Authenticate,
        on_complete: OnComplete,
        *,
        public_url: str,
        clock: Clock,
        max_size: int | None = None,
        expires_seconds: int = DEFAULT_EXPIRES_SECONDS,
        base_path: str = DEFAULT_BASE_PATH,
        validate: Validate | None = None,
        on_event: Callable[[TusEvent], None] | None = None,
        sweep_seconds: float = 300.0,
        body_timeout: float = 60.0,
    ) -> None:
        """
        ``authenticate`` takes the lower-cased request headers and returns the owner id or
        raises ``AuthError``. ``on_complete(owner, upload_id, data, metadata)`` runs once per
        upload when its last byte is durable; ``data`` is deleted after it returns. ``validate``
        (optional) runs at creation with the owner and metadata, to refuse early (e.g. an ended
        session). ``on_event`` (optional) sees every answered request, for the access log.
        Expired uploads are swept at most every ``sweep_seconds``, on a creation request.
        A PATCH body silent for ``body_timeout`` seconds is cut off (408), keeping its bytes.
        """
        if not base_path.startswith("/") or base_path.endswith("/"):
            raise ValueError("base_path must start with '/' and not end with one")
        self.store = store
        self.authenticate = authenticate
        self.on_complete = on_complete
        self.validate = validate
        self.on_event = on_event
        self.clock = clock
        self.max_size = store.max_size if max_size is None else min(max_size, store.max_size)
        self.expires_seconds = expires_seconds
        self.base_path = base_path
        self.public_base = public_url.rstrip("/") + base_path
        self.sweep_seconds = sweep_seconds
        self.body_timeout = body_timeout
        self._next_sweep = 0.0
        self._options_headers: Headers = [
            _TUS_VERSION,
            (b"tus-extension", EXTENSIONS.encode()),
            (b"tus-max-size", str(self.max_size).encode()),
        ]

    def routes(self) -> list[tuple[str, TusEndpoint]]:
        """(path, endpoint) pairs for the router: the collection and one upload."""
        return [(self.base_path, self), (f"{self.base_path}/{{upload_id}}", self)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = read_headers(scope)
        method = str(headers.get("x-http-method-override") or scope["method"]).strip().upper()
        request = _Request(scope, receive, send, headers, method, scope["method"] == "HEAD")
        try:
            request.upload_id = self._upload_id(scope)
            allow = COLLECTION_METHODS if request.upload_id is None else RESOURCE_METHODS
            if method not in allow:
                raise MethodNotAllowed(method[:20], allow)
            if method == "OPTIONS":
                await request.respond(204, self._options_headers)
                return
            version = headers.get("tus-resumable")
            if version != TUS_VERSION:
                raise VersionMismatch(version)
            request.owner = await self.authenticate(headers)
            note_tenant(scope, request.owner)
            if method == "POST":
                await self._create(request)
            elif method == "HEAD":
                await self._head(request)
            elif method == "PATCH":
                await self._patch(request)
            else:
                await self._delete(request)
        except Exception as exc:
            if request.status:  # the answer is already out (or its sending failed)
                log.exception("tus %s %s failed after answering", method, scope.get("path"))
                return
            status, body, extra = tus_error(exc)
            if not isinstance(exc, TapevaultError):
                log.exception("unexpected error in tus %s %s", method, scope.get("path"))
            elif status == 500:
                log.error("tus %s %s failed: %s", method, scope.get("path"), exc)
            request.error = type(exc).__name__
            await request.respond_json(status, body, extra)
        finally:
            self._emit(request)

    # --- handlers ----------------------------------------------------------------------------

    async def _create(self, request: _Request) -> None:
        headers = request.headers
        if "upload-defer-length" in headers:
            raise InvalidRequest("Upload-Defer-Length is not supported; send Upload-Length.")
        length = _number(headers.get("upload-length"), "Upload-Length", required=True)
        assert length is not None
        if length > self.max_size:
            raise PayloadTooLarge(self.max_size)
        metadata = parse_metadata(headers.get("upload-metadata", ""))
        request.session_id = check_metadata(metadata)
        await _refuse_body(request.receive, headers)
        owner = request.owner
        assert owner is not None
        if self.validate is not None:
            await self.validate(owner, dict(metadata))
        now = self.clock.now()
        await self._sweep(now)
        expires_at = int(now) + self.expires_seconds
        upload_id = await anyio.to_thread.run_sync(
            self.store.create, owner, length, metadata, expires_at
        )
        request.upload_id = upload_id
        request.offset = 0
        response: Headers = [
            (b"location", f"{self.public_base}/{upload_id}".encode("latin-1")),
            (b"upload-expires", _http_date(expires_at)),
        ]
        if length == 0:  # nothing to PATCH: complete now
            with self.store.open(owner, upload_id) as writer:
                response += await self._finish(request, writer)
        await request.respond(201, response)

    async def _head(self, request: _Request) -> None:
        upload = self._live(request)
        if upload.offset == upload.length and not upload.complete:
            upload = await self._finish_pending(request, upload)
        response: Headers = [
            (b"upload-offset", str(upload.offset).encode()),
            (b"upload-length", str(upload.length).encode()),
            (b"upload-expires", _http_date(upload.expires_at)),
        ]
        if upload.metadata:
            response.append((b"upload-metadata", encode_metadata(upload.metadata).encode()))
        response += _recording_header(upload.result)
        await request.respond(200, response)

    async def _patch(self, request: _Request) -> None:
        headers = request.headers
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != OFFSET_OCTET_STREAM:
            raise UnsupportedMediaType(f"PATCH needs Content-Type: {OFFSET_OCTET_STREAM}.")
        offset = _number(headers.get("upload-offset"), "Upload-Offset", required=True)
        assert offset is not None
        declared = _number(headers.get("content-length"), "Content-Length", required=False)
        self._live(request)
        owner, upload_id = request.owner, request.upload_id
        assert owner is not None and upload_id is not None
        with self.store.open(owner, upload_id) as writer:
            upload = self._check_live(writer.upload)
            if upload.complete:  # a repeated final PATCH: answer as before
                if offset != upload.length:
                    raise OffsetMismatch(upload.length, offset)
                if declared:
                    raise PayloadTooLarge(0)
                await request.respond(
                    204, [*self._patched(upload), *_recording_header(upload.result)]
                )
                return
            if offset != upload.offset:
                raise OffsetMismatch(upload.offset, offset)
            if declared is not None and offset + declared > upload.length:
                raise PayloadTooLarge(upload.length - offset)
            body = _Body(request.receive, self.body_timeout)
            expires_at = int(self.clock.now()) + self.expires_seconds
            upload = await writer.append(offset, body.chunks(), expires_at=expires_at)
            request.offset = upload.offset
            extra: Headers = []
            if upload.offset == upload.length:
                # Even if the client has just left: it will see offset == length and stop.
                extra = await self._finish(request, writer)
            if body.disconnected:
                # Nobody to answer; the bytes that did arrive are committed for the resume.
                request.status = 499  # for the access event only, as nginx logs it
                log.info("tus upload %s: client left at offset %d", upload_id, upload.offset)
                return
            if body.stalled and upload.offset < upload.length:
                # A connection that went silent (a closed lid, a lost network) would otherwise
                # hold the upload's lock, and so block its resume, until TCP gives up on it.
                raise BodyTimeout(upload.offset)
            await request.respond(204, [*self._patched(writer.upload), *extra])

    async def _delete(self, request: _Request) -> None:
        owner, upload_id = request.owner, request.upload_id
        assert owner is not None and upload_id is not None
        upload = self.store.get(owner, upload_id)
        request.session_id = upload.session_id
        await anyio.to_thread.run_sync(self.store.terminate, owner, upload_id)
        await request.respond(204, [])

    # --- helpers -----------------------------------------------------------------------------

    async def _finish(self, request: _Request, writer: UploadWriter) -> Headers:
        """Hand the complete data to ``on_complete`` (once), then record its result."""
        upload = writer.upload
        try:
            result = await self.on_complete(
                upload.owner, upload.upload_id, writer.data_path, dict(upload.metadata)
            )
        except (InvalidRequest, NotFound, Conflict, Gone):
            # The data will never be accepted: drop it rather than keep a dead upload around.
            await anyio.to_thread.run_sync(writer.terminate)
            raise
        except Exception:
            # Kept for a retry, unless the callback took the data away before it failed:
            # then there is nothing to retry with, and the client must start over.
            if not writer.data_path.exists():
                await anyio.to_thread.run_sync(writer.terminate)
            raise
        expires_at = int(self.clock.now()) + self.expires_seconds
        done = await anyio.to_thread.run_sync(writer.complete, result, expires_at)
        request.recording_id = _recording_id(done.result)
        return _recording_header(done.result)

    async def _finish_pending(self, request: _Request, upload: Upload) -> Upload:
        """Retry a completion that failed or was cut short (a crash, a 500 from on_complete).

        A client that sees offset == length considers its upload done and will not PATCH
        again, so its next look at the upload (HEAD, when it resumes) finishes the job.
        """
        try:
            with self.store.open(upload.owner, upload.upload_id) as writer:
                if writer.upload.offset == writer.upload.length and not writer.upload.complete:
                    await self._finish(request, writer)
                return writer.upload
        except UploadBusy:
            return upload  # a PATCH holds it and is finishing it right now

    def _patched(self, upload: Upload) -> Headers:
        return [
            (b"upload-offset", str(upload.offset).encode()),
            (b"upload-expires", _http_date(upload.expires_at)),
        ]

    def _live(self, request: _Request) -> Upload:
        assert request.owner is not None and request.upload_id is not None
        upload = self.store.get(request.owner, request.upload_id)
        request.session_id = upload.session_id
        request.offset = upload.offset
        return self._check_live(upload)

    def _check_live(self, upload: Upload) -> Upload:
        if upload.expires_at <= self.clock.now():
            raise Gone("The upload has expired.", GoneDetail("expired", upload.expires_at))
        return upload

    def _upload_id(self, scope: Scope) -> str | None:
        params = scope.get("path_params") or {}
        if "upload_id" in params:
            return str(params["upload_id"])
        if "path_params" in scope:  # routed to the collection path
            return None
        # Mounted without a router: read the id off the path.
        path: str = scope["path"]
        if not path.startswith(self.base_path):
            raise NotFound("Not found.")
        rest = path[len(self.base_path) :].strip("/")
        return rest or None

    async def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.sweep_seconds
        try:
            removed = await anyio.to_thread.run_sync(self.store.expire, now)
        except Exception:
            log.exception("sweeping expired tus uploads failed")
            return
        if removed:
            log.info("removed %d expired tus uploads", len(removed))

    def _emit(self, request: _Request) -> None:
        if self.on_event is None:
            return
        event = TusEvent(
            method=request.method,
            status=request.status,
            owner=request.owner,
            upload_id=request.upload_id,
            session_id=request.session_id,
            offset=request.offset,
            recording_id=request.recording_id,
            error=request.error,
            client_ip=client_ip(request.scope),
            user_agent=request.headers.get("user-agent"),
            request_id=scope_request_id(request.scope),
        )
        try:
            self.on_event(event)
        except Exception:
            log.exception("tus on_event callback failed")


class _Request:
    """What one request has learned so far, for the answer and the access event."""

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        method: str,
        head: bool,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers = headers
        self.method = method
        self.head = head  # the real method was HEAD: no body may follow
        self.status = 0
        self.owner: str | None = None
        self.upload_id: str | None = None
        self.session_id: str | None = None
        self.offset: int | None = None
        self.recording_id: str | None = None
        self.error: str | None = None

    async def respond(self, status: int, headers: Headers) -> None:
        self.status = status
        all_headers = [_TUS_RESUMABLE, NO_STORE, NOSNIFF, *headers]
        if status != 204:  # RFC 9110 §8.6: no Content-Length on a 204
            all_headers.append((b"content-length", b"0"))
        await self.send({"type": "http.response.start", "status": status, "headers": all_headers})
        await self.send({"type": "http.response.body", "body": b""})

    async def respond_json(self, status: int, body: dict[str, Any], headers: Headers) -> None:
        self.status = status
        await send_json(self.send, status, body, [_TUS_RESUMABLE, *headers], head_only=self.head)


class _Body:
    """The request body as chunks, noting whether the client went away or stalled mid-body."""

    def __init__(self, receive: Receive, idle_timeout: float | None = None) -> None:
        self._receive = receive
        self._idle_timeout = idle_timeout
        self.disconnected = False
        self.stalled = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            with anyio.move_on_after(self._idle_timeout) as waiting:
                message = await self._receive()
            if waiting.cancelled_caught:
                self.stalled = True
                return
            if message["type"] == "http.disconnect":
                self.disconnected = True
                return
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


async def _refuse_body(receive: Receive, headers: Mapping[str, str]) -> None:
    """Creation-with-upload is not offered: a POST must not carry bytes."""
    declared = _number(headers.get("content-length"), "Content-Length", required=False)
    if declared:
        raise InvalidRequest("A creation request takes no body; send the bytes with PATCH.")
    if "transfer-encoding" in headers:
        async for _chunk in _Body(receive).chunks():
            raise InvalidRequest("A creation request takes no body; send the bytes with PATCH.")


def _number(value: str | None, name: str, *, required: bool) -> int | None:
    if value is None:
        if required:
            raise InvalidRequest(f"{name} header is required.")
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value) is None:
        raise InvalidRequest(f"{name} must be a non-negative integer.")
    return int(value)


def _http_date(unix_seconds: float) -> bytes:
    """RFC 9110 IMF-fixdate, e.g. ``Wed, 25 Jun 2014 16:00:00 GMT``."""
    return formatdate(unix_seconds, usegmt=True).encode("ascii")


def _recording_id(result: Mapping[str, Any] | None) -> str | None:
    if result is None:
        return None
    recording_id = result.get("recording_id")
    return None if recording_id is None else str(recording_id)


def _recording_header(result: Mapping[str, Any] | None) -> Headers:
    recording_id = _recording_id(result)
    if recording_id is None or not recording_id.isprintable() or not recording_id.isascii():
        return []
    return [(RECORDING_HEADER, recording_id.encode("ascii"))]
