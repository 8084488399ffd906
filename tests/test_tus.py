"""tus 1.0.0 resumable uploads: the protocol in process, the disk store, and tuspy over a socket."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from starlette.routing import Route, Router

from tapevault.core.clock import FixedClock
from tapevault.errors import (
    AuthError,
    Conflict,
    InvalidAudio,
    StorageError,
    UnsupportedMediaType,
)
from tapevault.http.asgi import ASGIApp, Message, Receive, Scope, Send
from tapevault.http.tus import TusEndpoint, TusEvent, encode_metadata, parse_metadata
from tapevault.ingest.tus_store import TusStore, UploadBusy
from tests.server import listen
from tests.support import wait_for

START = 1_800_000_000.0
PUBLIC = "https://vault.test"
BASE = "/api/v1/uploads"
EXPIRES = 3600
MAX_SIZE = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
A = {**TUS, "sdp_suki_token": "A"}
B = {**TUS, "sdp_suki_token": "B"}
OCTETS = "application/offset+octet-stream"
UNKNOWN_ID = "AAAAAAAAAAAAAAAAAAAAAA"
NOT_UTF8 = base64.b64encode(bytes([0xFF, 0xFE])).decode()


# --- harness ---------------------------------------------------------------------------------


async def fake_authenticate(headers: dict[str, str]) -> str:
    token = headers.get("sdp_suki_token")
    if token in {"A", "B"}:
        return token
    raise AuthError("Missing or invalid sdp_suki_token.")


@dataclass
class Completions:
    """An on_complete that records every call and can be told to fail."""

    calls: list[tuple[str, str, bytes, dict[str, str]]] = field(default_factory=list)
    fail: list[Exception] = field(default_factory=list)

    async def __call__(
        self, owner: str, upload_id: str, data: Path, metadata: dict[str, str]
    ) -> dict[str, Any]:
        if self.fail:
            raise self.fail.pop(0)
        received = await anyio.to_thread.run_sync(data.read_bytes)
        self.calls.append((owner, upload_id, received, metadata))
        return {"recording_id": f"rec-{len(self.calls)}"}


@dataclass
class Harness:
    store: TusStore
    endpoint: TusEndpoint
    completions: Completions
    clock: FixedClock
    events: list[TusEvent]
    app: ASGIApp


def build(
    root: Path,
    clock: FixedClock,
    public_url: str = PUBLIC,
    max_size: int = MAX_SIZE,
    **options: Any,
) -> Harness:
    store = TusStore(root, max_size=max_size, clock=clock)
    completions = Completions()
    events: list[TusEvent] = []
    endpoint = TusEndpoint(
        store,
        fake_authenticate,
        completions,
        public_url=public_url,
        clock=clock,
        expires_seconds=EXPIRES,
        base_path=BASE,
        on_event=events.append,
        **options,
    )
    router = Router(routes=[Route(path, app) for path, app in endpoint.routes()])
    return Harness(store, endpoint, completions, clock, events, router)


@pytest.fixture
def tus_clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def harness(tmp_path: Path, tus_clock: FixedClock) -> Harness:
    return build(tmp_path / "tus", tus_clock)


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as c:
        yield c


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def http_date(unix: float) -> str:
    return formatdate(unix, usegmt=True)


def checked(response: httpx.Response, status: int) -> httpx.Response:
    """Assert the status and what every tus response carries."""
    assert response.status_code == status, response.text
    assert response.headers["tus-resumable"] == "1.0.0"
    if status >= 400 and response.request.method != "HEAD":
        body = response.json()
        assert body["code"] == status and isinstance(body["message"], str)
    return response


async def create(
    client: httpx.AsyncClient,
    length: int,
    headers: dict[str, str] = A,
    session_id: str = "sess-1",
    **extra: str,
) -> str:
    response = await client.post(
        BASE,
        headers={
            **headers,
            "Upload-Length": str(length),
            "Upload-Metadata": meta(session_id=session_id, **extra),
        },
    )
    checked(response, 201)
    return response.headers["location"].rsplit("/", 1)[1]


async def patch(
    client: httpx.AsyncClient,
    upload_id: str,
    offset: int,
    body: bytes,
    headers: dict[str, str] = A,
) -> httpx.Response:
    return await client.patch(
        f"{BASE}/{upload_id}",
        headers={**headers, "Content-Type": OCTETS, "Upload-Offset": str(offset)},
        content=body,
    )


async def head(
    client: httpx.AsyncClient, upload_id: str, headers: dict[str, str] = A
) -> httpx.Response:
    return await client.head(f"{BASE}/{upload_id}", headers=headers)


# --- discovery and version -------------------------------------------------------------------


async def test_options_advertises_version_extensions_and_max_size(
    client: httpx.AsyncClient,
) -> None:
    """OPTIONS needs neither Tus-Resumable nor credentials and lists what the server does."""
    for path in (BASE, f"{BASE}/{UNKNOWN_ID}"):
        response = checked(await client.options(path), 204)
        assert response.headers["tus-version"] == "1.0.0"
        assert response.headers["tus-extension"] == "creation,expiration,termination"
        assert response.headers["tus-max-size"] == str(MAX_SIZE)
        assert "content-length" not in response.headers


@pytest.mark.parametrize("version", [None, "0.2.2", "1.0"])
async def test_missing_or_other_tus_resumable_is_412(
    client: httpx.AsyncClient, version: str | None
) -> None:
    """Every request but OPTIONS must say Tus-Resumable: 1.0.0; the 412 names the version."""
    headers = {
        "sdp_suki_token": "A",
        "Upload-Length": "10",
        "Upload-Metadata": meta(session_id="s"),
    }
    if version is not None:
        headers["Tus-Resumable"] = version
    response = checked(await client.post(BASE, headers=headers), 412)
    assert response.headers["tus-version"] == "1.0.0"


async def test_missing_credentials_are_401(client: httpx.AsyncClient) -> None:
    """authenticate raising AuthError answers 401 in the Suki error shape."""
    headers = {**TUS, "Upload-Length": "10", "Upload-Metadata": meta(session_id="s")}
    response = checked(await client.post(BASE, headers=headers), 401)
    assert response.json()["message"] == "Missing or invalid sdp_suki_token."


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    """GET on an upload and PATCH on the collection are refused with Allow."""
    upload_id = await create(client, 10)
    response = checked(await client.get(f"{BASE}/{upload_id}", headers=A), 405)
    assert response.headers["allow"] == "HEAD, PATCH, DELETE, OPTIONS"
    response = checked(await client.patch(BASE, headers=A, content=b"x"), 405)
    assert response.headers["allow"] == "POST, OPTIONS"


# --- creation ----------------------------------------------------------------------------------


async def test_create_answers_201_with_absolute_location_and_expiry(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """POST makes an empty upload under a random 128-bit id; Location is absolute."""
    response = await client.post(
        BASE,
        headers={**A, "Upload-Length": "100", "Upload-Metadata": meta(session_id="sess-1")},
    )
    checked(response, 201)
    location = response.headers["location"]
    assert location.startswith(f"{PUBLIC}{BASE}/")
    upload_id = location.rsplit("/", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", upload_id)
    assert response.headers["upload-expires"] == http_date(START + EXPIRES)
    assert response.content == b""
    assert (harness.store.root / f"{upload_id}.bin").stat().st_size == 0
    upload = harness.store.get("A", upload_id)
    assert (upload.owner, upload.length, upload.offset) == ("A", 100, 0)
    assert upload.session_id == "sess-1"
    assert (upload.created_at, upload.expires_at) == (START, START + EXPIRES)
    other = await create(client, 100)
    assert other != upload_id


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "Upload-Length header is required."),
        ({"Upload-Length": "-1"}, "Upload-Length must be a non-negative integer."),
        ({"Upload-Length": "1.5"}, "Upload-Length must be a non-negative integer."),
        ({"Upload-Length": "ten"}, "Upload-Length must be a non-negative integer."),
        (
            {"Upload-Defer-Length": "1"},
            "Upload-Defer-Length is not supported; send Upload-Length.",
        ),
    ],
)
async def test_create_needs_a_known_length(
    client: httpx.AsyncClient, extra: dict[str, str], message: str
) -> None:
    """Upload-Length is required and numeric; deferred length is not offered (400)."""
    headers = {**A, "Upload-Metadata": meta(session_id="s"), **extra}
    response = checked(await client.post(BASE, headers=headers), 400)
    assert response.json()["message"] == message


async def test_create_over_max_size_is_413(client: httpx.AsyncClient, harness: Harness) -> None:
    """An Upload-Length above Tus-Max-Size is refused before anything is stored."""
    headers = {**A, "Upload-Length": str(MAX_SIZE + 1), "Upload-Metadata": meta(session_id="s")}
    checked(await client.post(BASE, headers=headers), 413)
    assert list(harness.store.root.iterdir()) == []
    await create(client, MAX_SIZE)


@pytest.mark.parametrize(
    "metadata",
    [
        "",
        meta(filename="a.wav"),
        meta(session_id=""),
        meta(session_id="../../etc"),
        "session_id !!notbase64",
        "session_id YQ== extra",
        f"{meta(session_id='a')},{meta(session_id='b')}",
        f" {base64.b64encode(b'x').decode()}",
        f"session_id {NOT_UTF8}",
        meta(session_id="s", filetype="not a type"),
    ],
)
async def test_create_validates_metadata(client: httpx.AsyncClient, metadata: str) -> None:
    """Upload-Metadata must be well-formed base64 pairs and carry a valid session_id."""
    headers = {**A, "Upload-Length": "10", "Upload-Metadata": metadata}
    checked(await client.post(BASE, headers=headers), 400)


async def test_create_refuses_a_body(client: httpx.AsyncClient) -> None:
    """Creation-with-upload is not offered: bytes go in PATCH."""
    headers = {**A, "Upload-Length": "3", "Upload-Metadata": meta(session_id="s")}
    response = checked(await client.post(BASE, headers=headers, content=b"abc"), 400)
    assert "PATCH" in response.json()["message"]


async def test_validate_callback_refuses_before_anything_is_stored(
    tmp_path: Path, tus_clock: FixedClock
) -> None:
    """The optional validate hook (e.g. session ended) answers the POST; no upload is made."""
    seen: list[tuple[str, dict[str, str]]] = []

    async def validate(owner: str, metadata: dict[str, str]) -> None:
        seen.append((owner, metadata))
        raise Conflict("The session has ended; it accepts no more audio.")

    h = build(tmp_path / "tus", tus_clock, validate=validate)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app), base_url=PUBLIC) as c:
        headers = {**A, "Upload-Length": "10", "Upload-Metadata": meta(session_id="ended")}
        response = checked(await c.post(BASE, headers=headers), 409)
    assert response.json()["message"] == "The session has ended; it accepts no more audio."
    assert seen == [("A", {"session_id": "ended"})]
    assert list(h.store.root.iterdir()) == []


async def test_zero_length_upload_completes_at_creation(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """With nothing to PATCH, the POST itself hands the (empty) data to on_complete."""
    response = await client.post(
        BASE, headers={**A, "Upload-Length": "0", "Upload-Metadata": meta(session_id="s")}
    )
    checked(response, 201)
    assert response.headers["tapevault-recording-id"] == "rec-1"
    assert [call[2] for call in harness.completions.calls] == [b""]


# --- HEAD and metadata -------------------------------------------------------------------------


async def test_head_reports_offset_length_metadata_and_no_store(
    client: httpx.AsyncClient,
) -> None:
    """HEAD: 200, Upload-Offset/-Length/-Metadata/-Expires, Cache-Control no-store, no body."""
    upload_id = await create(client, 10, filename="visite – été.wav", filetype="audio/wav")
    checked(await patch(client, upload_id, 0, b"0123"), 204)
    response = checked(await head(client, upload_id), 200)
    assert response.headers["upload-offset"] == "4"
    assert response.headers["upload-length"] == "10"
    assert response.headers["upload-expires"] == http_date(START + EXPIRES)
    assert "no-store" in response.headers["cache-control"]
    assert parse_metadata(response.headers["upload-metadata"]) == {
        "session_id": "sess-1",
        "filename": "visite – été.wav",
        "filetype": "audio/wav",
    }
    assert response.content == b""


def test_metadata_round_trip_and_key_only_values() -> None:
    """A key without a value means the empty string; encoding inverts parsing."""
    parsed = parse_metadata(f"{meta(session_id='s1')}, flag ,{meta(name='a,b c')}")
    assert parsed == {"session_id": "s1", "flag": "", "name": "a,b c"}
    assert parse_metadata(encode_metadata(parsed)) == parsed


# --- PATCH -------------------------------------------------------------------------------------


async def test_patches_append_and_the_last_one_completes(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """Bytes land at the offset; at offset == length on_complete runs once with exact data."""
    data = os.urandom(1000)
    upload_id = await create(client, len(data), filename="v.wav")
    first = checked(await patch(client, upload_id, 0, data[:300]), 204)
    assert first.headers["upload-offset"] == "300"
    assert "tapevault-recording-id" not in first.headers
    assert "content-length" not in first.headers
    assert harness.completions.calls == []
    last = checked(await patch(client, upload_id, 300, data[300:]), 204)
    assert last.headers["upload-offset"] == "1000"
    assert last.headers["upload-expires"] == http_date(START + EXPIRES)
    assert last.headers["tapevault-recording-id"] == "rec-1"
    assert harness.completions.calls == [
        ("A", upload_id, data, {"session_id": "sess-1", "filename": "v.wav"})
    ]
    assert not (harness.store.root / f"{upload_id}.bin").exists()
    after = checked(await head(client, upload_id), 200)
    assert after.headers["upload-offset"] == "1000"
    assert after.headers["tapevault-recording-id"] == "rec-1"


async def test_repeated_final_patch_is_answered_again_without_a_second_completion(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """A client unsure whether its last PATCH arrived may repeat it empty: same 204."""
    upload_id = await create(client, 4)
    checked(await patch(client, upload_id, 0, b"abcd"), 204)
    again = checked(await patch(client, upload_id, 4, b""), 204)
    assert again.headers["upload-offset"] == "4"
    assert again.headers["tapevault-recording-id"] == "rec-1"
    checked(await patch(client, upload_id, 0, b"abcd"), 409)
    assert len(harness.completions.calls) == 1


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "audio/wav"])
async def test_patch_needs_offset_octet_stream(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    """Any other (or no) Content-Type is 415 and writes nothing."""
    upload_id = await create(client, 10)
    headers = {**A, "Upload-Offset": "0"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await client.patch(f"{BASE}/{upload_id}", headers=headers, content=b"abc")
    checked(response, 415)
    assert (await head(client, upload_id)).headers["upload-offset"] == "0"


async def test_offset_mismatch_is_409_and_writes_nothing(client: httpx.AsyncClient) -> None:
    """Upload-Offset must equal the current offset, ahead or behind."""
    upload_id = await create(client, 10)
    checked(await patch(client, upload_id, 3, b"abc"), 409)
    checked(await patch(client, upload_id, 0, b"abcd"), 204)
    response = checked(await patch(client, upload_id, 2, b"cdef"), 409)
    assert response.json()["message"] == "Upload-Offset 2 does not match the upload's offset 4."
    assert (await head(client, upload_id)).headers["upload-offset"] == "4"


@pytest.mark.parametrize("offset", [None, "-1", "x", "1e3"])
async def test_patch_needs_a_numeric_upload_offset(
    client: httpx.AsyncClient, offset: str | None
) -> None:
    """A missing or malformed Upload-Offset is 400."""
    upload_id = await create(client, 10)
    headers = {**A, "Content-Type": OCTETS}
    if offset is not None:
        headers["Upload-Offset"] = offset
    checked(await client.patch(f"{BASE}/{upload_id}", headers=headers, content=b"a"), 400)


async def test_patch_past_the_length_is_413(client: httpx.AsyncClient) -> None:
    """A body longer than what remains is refused before a byte is written."""
    upload_id = await create(client, 10)
    checked(await patch(client, upload_id, 0, b"0123456"), 204)
    checked(await patch(client, upload_id, 7, b"789A"), 413)
    assert (await head(client, upload_id)).headers["upload-offset"] == "7"


async def test_method_override_is_honoured(client: httpx.AsyncClient, harness: Harness) -> None:
    """X-HTTP-Method-Override replaces the method: POST as PATCH, HEAD and DELETE."""
    upload_id = await create(client, 3)
    url = f"{BASE}/{upload_id}"
    override = {**A, "X-HTTP-Method-Override": "PATCH", "Content-Type": OCTETS}
    response = await client.post(url, headers={**override, "Upload-Offset": "0"}, content=b"ab")
    assert checked(response, 204).headers["upload-offset"] == "2"
    response = await client.post(url, headers={**A, "X-HTTP-Method-Override": "HEAD"})
    assert checked(response, 200).headers["upload-offset"] == "2"
    response = await client.post(url, headers={**A, "X-HTTP-Method-Override": "DELETE"})
    checked(response, 204)
    checked(await head(client, upload_id), 404)
    assert harness.completions.calls == []


# --- not found, isolation, concurrency -----------------------------------------------------------


@pytest.mark.parametrize("upload_id", [UNKNOWN_ID, "short", "not-an-id!", "A" * 23])
async def test_unknown_upload_is_404(client: httpx.AsyncClient, upload_id: str) -> None:
    """HEAD, PATCH and DELETE on an id that does not exist answer 404."""
    checked(await head(client, upload_id), 404)
    checked(await patch(client, upload_id, 0, b"a"), 404)
    checked(await client.delete(f"{BASE}/{upload_id}", headers=A), 404)


async def test_another_owners_upload_is_indistinguishable_from_unknown(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """Owner B gets the same 404 for A's upload as for a missing one, and changes nothing."""
    upload_id = await create(client, 10)
    checked(await patch(client, upload_id, 0, b"abc"), 204)
    unknown = checked(await patch(client, UNKNOWN_ID, 3, b"def", headers=B), 404)
    foreign = checked(await patch(client, upload_id, 3, b"def", headers=B), 404)
    assert foreign.json() == unknown.json()
    checked(await head(client, upload_id, headers=B), 404)
    checked(await client.delete(f"{BASE}/{upload_id}", headers=B), 404)
    assert (await head(client, upload_id)).headers["upload-offset"] == "3"
    assert harness.store.get("A", upload_id).offset == 3


async def test_a_second_writer_is_refused_with_423(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """While one request holds an upload, PATCH and DELETE answer 423 instead of interleaving."""
    upload_id = await create(client, 10)
    with harness.store.open("A", upload_id):
        checked(await patch(client, upload_id, 0, b"abc"), 423)
        checked(await client.delete(f"{BASE}/{upload_id}", headers=A), 423)
        with pytest.raises(UploadBusy):
            harness.store.terminate("A", upload_id)
    checked(await patch(client, upload_id, 0, b"abc"), 204)


# --- resume after a dropped connection ----------------------------------------------------------


async def call_raw(
    app: ASGIApp,
    method: str,
    path: str,
    headers: dict[str, str],
    messages: Sequence[Message],
    *,
    then_stall: bool = False,
) -> list[Message]:
    """Drive the app directly: receive() yields ``messages``, then http.disconnect (or nothing
    ever again, with ``then_stall``)."""
    queue = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        if not queue and then_stall:
            await anyio.sleep_forever()
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("vault.test", 443),
    }
    await app(scope, receive, send)
    return sent


async def test_bytes_before_a_disconnect_are_kept_and_the_upload_resumes(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """A PATCH cut off half way keeps (fsynced) what arrived; HEAD shows it; a PATCH finishes."""
    data = os.urandom(4000)
    upload_id = await create(client, len(data))
    headers = {**A, "Content-Type": OCTETS, "Upload-Offset": "0", "Content-Length": "4000"}
    body = [
        {"type": "http.request", "body": data[:1500], "more_body": True},
        {"type": "http.request", "body": data[1500:2000], "more_body": True},
    ]  # ...and then the client is gone
    sent = await call_raw(harness.app, "PATCH", f"{BASE}/{upload_id}", headers, body)
    assert sent == []  # nobody left to answer
    assert harness.events[-1].status == 499 and harness.events[-1].offset == 2000
    response = checked(await head(client, upload_id), 200)
    assert response.headers["upload-offset"] == "2000"
    assert (harness.store.root / f"{upload_id}.bin").read_bytes() == data[:2000]
    assert harness.completions.calls == []
    checked(await patch(client, upload_id, 0, data), 409)
    checked(await patch(client, upload_id, 2000, data[2000:]), 204)
    assert [call[2] for call in harness.completions.calls] == [data]


async def test_a_disconnect_after_the_last_byte_still_completes(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """If every byte arrived before the drop, the upload completes: the client will not PATCH."""
    upload_id = await create(client, 6)
    headers = {**A, "Content-Type": OCTETS, "Upload-Offset": "0"}
    body = [{"type": "http.request", "body": b"abcdef", "more_body": True}]
    await call_raw(harness.app, "PATCH", f"{BASE}/{upload_id}", headers, body)
    assert [call[2] for call in harness.completions.calls] == [b"abcdef"]
    response = checked(await head(client, upload_id), 200)
    assert response.headers["tapevault-recording-id"] == "rec-1"


async def test_a_stalled_body_is_cut_off_with_408_and_its_bytes_kept(
    tmp_path: Path, tus_clock: FixedClock
) -> None:
    """A connection that goes silent mid-body releases the upload; the client can resume."""
    h = build(tmp_path / "tus", tus_clock, body_timeout=0.05)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app), base_url=PUBLIC) as c:
        upload_id = await create(c, 10)
        headers = {**A, "Content-Type": OCTETS, "Upload-Offset": "0", "Content-Length": "10"}
        body = [{"type": "http.request", "body": b"012", "more_body": True}]
        sent = await call_raw(h.app, "PATCH", f"{BASE}/{upload_id}", headers, body, then_stall=True)
        assert sent[0]["status"] == 408
        assert (b"tus-resumable", b"1.0.0") in sent[0]["headers"]
        assert (await head(c, upload_id)).headers["upload-offset"] == "3"
        checked(await patch(c, upload_id, 3, b"3456789"), 204)
    assert [call[2] for call in h.completions.calls] == [b"0123456789"]


async def test_unacknowledged_bytes_after_a_crash_are_cut_back(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """Bytes on disk past the committed offset (a crash before commit) do not count."""
    upload_id = await create(client, 8)
    checked(await patch(client, upload_id, 0, b"abcd"), 204)
    with (harness.store.root / f"{upload_id}.bin").open("ab") as f:
        f.write(b"JUNK")
    assert (await head(client, upload_id)).headers["upload-offset"] == "4"
    checked(await patch(client, upload_id, 4, b"efgh"), 204)
    assert [call[2] for call in harness.completions.calls] == [b"abcdefgh"]


# --- termination and expiry ------------------------------------------------------------------


async def test_delete_terminates_the_upload(client: httpx.AsyncClient, harness: Harness) -> None:
    """DELETE answers 204, removes both files, and the upload is 404 afterwards."""
    upload_id = await create(client, 10)
    checked(await patch(client, upload_id, 0, b"abc"), 204)
    response = checked(await client.delete(f"{BASE}/{upload_id}", headers=A), 204)
    assert response.content == b""
    assert list(harness.store.root.iterdir()) == []
    checked(await head(client, upload_id), 404)
    checked(await patch(client, upload_id, 3, b"def"), 404)
    checked(await client.delete(f"{BASE}/{upload_id}", headers=A), 404)


async def test_expired_upload_is_410_until_swept_then_404(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """Past Upload-Expires HEAD and PATCH are 410; expire(now) removes it; then 404."""
    upload_id = await create(client, 10)
    harness.clock.advance(EXPIRES - 1)
    checked(await head(client, upload_id), 200)
    harness.clock.advance(1)
    checked(await head(client, upload_id), 410)
    response = checked(await patch(client, upload_id, 0, b"abc"), 410)
    assert response.json()["reason"] == "expired"
    assert harness.store.expire(harness.clock.now()) == [upload_id]
    assert list(harness.store.root.iterdir()) == []
    checked(await head(client, upload_id), 404)


async def test_each_patch_moves_the_expiry(client: httpx.AsyncClient, harness: Harness) -> None:
    """Expiry slides: an upload that keeps receiving bytes does not expire under the client."""
    upload_id = await create(client, 10)
    harness.clock.advance(EXPIRES - 10)
    response = checked(await patch(client, upload_id, 0, b"abc"), 204)
    assert response.headers["upload-expires"] == http_date(harness.clock.now() + EXPIRES)
    harness.clock.advance(EXPIRES - 10)
    checked(await patch(client, upload_id, 3, b"def"), 204)
    assert harness.store.expire(harness.clock.now()) == []


async def test_creation_sweeps_expired_uploads(client: httpx.AsyncClient, harness: Harness) -> None:
    """A POST after the sweep interval removes uploads that expired meanwhile."""
    old = await create(client, 10)
    harness.clock.advance(EXPIRES + 1)
    new = await create(client, 10)
    assert not (harness.store.root / f"{old}.json").exists()
    assert harness.store.get("A", new).offset == 0


def test_expire_removes_orphans_and_skips_busy_uploads(tmp_path: Path) -> None:
    """Old data files without state, stale temporaries go; an upload being written stays."""
    clock = FixedClock(START)
    store = TusStore(tmp_path, max_size=100, clock=clock)
    busy = store.create("A", 10, {"session_id": "s"}, int(START) + 5)
    orphan = tmp_path / f"{UNKNOWN_ID}.bin"
    orphan.write_bytes(b"x")
    stale = tmp_path / ".abc.tmp"
    stale.write_bytes(b"{}")
    for path in (orphan, stale):
        os.utime(path, (START - 7200, START - 7200))
    with store.open("A", busy):
        assert store.expire(START + 10) == []
    assert not orphan.exists() and not stale.exists()
    assert store.expire(START + 10) == [busy]


# --- completion failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidAudio("The body is not a WAV file."), 400),
        (UnsupportedMediaType("audio/ogg is not accepted."), 415),
    ],
)
async def test_rejected_data_answers_the_final_patch_and_terminates(
    client: httpx.AsyncClient, harness: Harness, error: Exception, status: int
) -> None:
    """on_complete refusing the audio: the last PATCH gets its message; nothing stays behind."""
    upload_id = await create(client, 4)
    harness.completions.fail.append(error)
    response = checked(await patch(client, upload_id, 0, b"RIFX"), status)
    assert response.json()["message"] == str(error)
    assert list(harness.store.root.iterdir()) == []
    checked(await head(client, upload_id), 404)


async def test_a_failed_completion_is_retried_when_the_client_looks_again(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """An internal failure keeps the bytes; the client's next HEAD finishes the job once."""
    upload_id = await create(client, 4)
    harness.completions.fail.append(StorageError("disk on fire"))
    response = checked(await patch(client, upload_id, 0, b"RIFF"), 500)
    assert response.json()["message"] == "An internal error occurred."
    assert harness.store.get("A", upload_id).offset == 4
    response = checked(await head(client, upload_id), 200)
    assert response.headers["upload-offset"] == "4"
    assert response.headers["tapevault-recording-id"] == "rec-1"
    checked(await head(client, upload_id), 200)
    assert [call[2] for call in harness.completions.calls] == [b"RIFF"]


async def test_a_failure_after_the_callback_took_the_data_drops_the_upload(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """If on_complete moved the data away and then failed, there is nothing left to retry."""
    upload_id = await create(client, 4)

    async def consume_then_fail(
        owner: str, upload_id: str, data: Path, metadata: dict[str, str]
    ) -> dict[str, Any]:
        await anyio.to_thread.run_sync(data.unlink)
        raise StorageError("database went away")

    harness.endpoint.on_complete = consume_then_fail
    checked(await patch(client, upload_id, 0, b"RIFF"), 500)
    checked(await head(client, upload_id), 404)
    assert list(harness.store.root.iterdir()) == []


async def test_events_name_owner_upload_and_status(
    client: httpx.AsyncClient, harness: Harness
) -> None:
    """on_event sees each answered request with ids only, for the access log."""
    upload_id = await create(client, 2)
    await patch(client, upload_id, 0, b"ok", headers={**A, "X-Request-Id": "req-7"})
    await client.post(BASE, headers={**TUS, "Upload-Length": "1"})
    create_event, patch_event, denied = harness.events
    assert (create_event.method, create_event.status, create_event.owner) == ("POST", 201, "A")
    assert create_event.session_id == "sess-1" and create_event.upload_id == upload_id
    assert (patch_event.status, patch_event.offset, patch_event.recording_id) == (204, 2, "rec-1")
    assert patch_event.request_id == "req-7"
    assert (denied.status, denied.owner, denied.error) == (401, None, "AuthError")


# --- a real client over a real socket -----------------------------------------------------------


@dataclass
class PatchLog:
    """Wraps the app to note each PATCH's Upload-Offset as the server received it."""

    app: ASGIApp
    offsets: list[int] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "PATCH":
            headers = dict(scope["headers"])
            self.offsets.append(int(headers[b"upload-offset"]))
        await self.app(scope, receive, send)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[tuple[str, Harness, PatchLog]]:
    import uvicorn

    listener = listen()  # bound here, so no other process can take the port first
    port = listener.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    clock = FixedClock(time.time())
    harness = build(tmp_path / "tus", clock, public_url=base, max_size=64 * 1024 * 1024)
    log = PatchLog(harness.app)
    config = uvicorn.Config(log, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, args=([listener],), daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="uvicorn to start")
        yield base, harness, log
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def server_offset(url: str) -> int:
    response = httpx.head(url, headers=A)
    assert response.status_code == 200
    return int(response.headers["upload-offset"])


def test_tuspy_resumes_an_interrupted_upload_from_its_offset(
    live_server: tuple[str, Harness, PatchLog], tmp_path: Path
) -> None:
    """tuspy uploads part, a PATCH dies mid-body, a new uploader resumes there and finishes."""
    tus_client = pytest.importorskip("tusclient.client")
    base, harness, patches = live_server
    data = os.urandom(3 * 1024 * 1024 + 12345)
    source = tmp_path / "visit.wav"
    source.write_bytes(data)
    chunk = 256 * 1024
    client = tus_client.TusClient(f"{base}{BASE}", headers={"sdp_suki_token": "A"})
    metadata = {"session_id": "sess-42", "filename": "visit.wav", "filetype": "audio/wav"}

    # Streams we close ourselves: with file_path= tuspy leaves its file handles open.
    stream = source.open("rb")
    first = client.uploader(file_stream=stream, chunk_size=chunk, metadata=metadata)
    first.upload(stop_at=5 * chunk)  # the laptop lid closes after five chunks
    url = first.url
    assert url.startswith(f"{base}{BASE}/")
    assert server_offset(url) == 5 * chunk
    assert patches.offsets == [i * chunk for i in range(5)]

    # A sixth PATCH is cut off mid-body: the bytes that arrived must count.
    port = int(base.rsplit(":", 1)[1])
    path = url.removeprefix(base)
    sent = 100_000
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(
            (
                f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTus-Resumable: 1.0.0\r\n"
                f"sdp_suki_token: A\r\nContent-Type: {OCTETS}\r\n"
                f"Upload-Offset: {5 * chunk}\r\nContent-Length: {chunk}\r\n\r\n"
            ).encode()
            + data[5 * chunk : 5 * chunk + sent]
        )
        time.sleep(0.5)
    expected = 5 * chunk + sent
    deadline = time.monotonic() + 10
    while server_offset(url) != expected:
        assert time.monotonic() < deadline, f"offset stuck at {server_offset(url)}"
        time.sleep(0.05)
    assert harness.completions.calls == []

    stream.close()
    stream = source.open("rb")  # a new process, as it were: same file, fresh uploader
    resumed = client.uploader(file_stream=stream, url=url, chunk_size=chunk)
    assert resumed.offset == expected  # from HEAD, not 0
    resumed_from = len(patches.offsets)
    resumed.upload()
    stream.close()
    assert patches.offsets[resumed_from] == expected
    assert 0 not in patches.offsets[1:]
    assert len(harness.completions.calls) == 1
    owner, upload_id, received, got_metadata = harness.completions.calls[0]
    assert (owner, got_metadata) == ("A", metadata)
    assert url.endswith(upload_id)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()
    final = httpx.head(url, headers=A)
    assert final.headers["upload-offset"] == str(len(data))
    assert final.headers["tapevault-recording-id"] == "rec-1"
