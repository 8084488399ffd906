"""Uploads as HTTP tools send them without being told: ``curl --data-binary @f.wav`` labels the
body ``application/x-www-form-urlencoded`` and ``curl -F file=@f.wav`` (like browsers' FormData
and most libraries' ``files=``) sends ``multipart/form-data``. Both are taken when the audio is
there: the form-encoded body as if unlabelled (its bytes decide), the multipart body's one file
part as the upload. Anything else about a form is refused with a 400 or 415 that says what to
send. In process, through the Suki and Amigo dialects, on SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.runtime import Runtime
from tests.dialects import Customer, asgi_client, customer
from tests.support import incoming_objects

WAV = tone_wav_bytes(1.0)
BOUNDARY = "tapevault-test-boundary"
FORM = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: parsing the body comes before the database."""
    return f"sqlite:///{tmp_path / 'meta.db'}"


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(runtime) as c:
        yield c


@pytest.fixture
def who(runtime: Runtime, clock: object) -> Customer:
    return customer(runtime, clock)  # type: ignore[arg-type]


async def suki_upload(
    client: httpx.AsyncClient, who: Customer, **request: object
) -> httpx.Response:
    """Upload to a new ambient session of ``who``."""
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id = created.json()["ambient_session_id"]
    headers = {**who.suki, **request.pop("headers", {})}  # type: ignore[dict-item]
    return await client.post(
        f"/api/v1/ambient/session/{session_id}/audio",
        headers=headers,
        **request,  # type: ignore[arg-type]
    )


def part(body: bytes, *, name: str = "file", content_type: str | None = "audio/wav") -> bytes:
    typed = f"Content-Type: {content_type}\r\n" if content_type else ""
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="a.wav"\r\n'
            f"{typed}\r\n"
        ).encode()
        + body
        + b"\r\n"
    )


def closed(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def assert_nothing_kept(runtime: Runtime) -> None:
    assert not list((runtime.settings.data_dir / "spool").iterdir())
    assert incoming_objects(runtime.vault.store) == []


async def test_curl_data_binary_default_type_is_taken(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer
) -> None:
    """A WAV sent as application/x-www-form-urlencoded (curl --data-binary's default) is
    accepted: the bytes are plainly audio, and the label is the tool's, not the user's."""
    answer = await suki_upload(
        client,
        who,
        headers={"content-type": "application/x-www-form-urlencoded"},
        content=WAV,
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "processing"
    runtime.worker.run_until_idle()


async def test_form_encoded_non_audio_says_what_to_send(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer
) -> None:
    """A real form body (key=value) is 415, and the message names the header to send."""
    answer = await suki_upload(
        client,
        who,
        headers={"content-type": "application/x-www-form-urlencoded"},
        content=b"a=1&b=2",
    )
    assert answer.status_code == 415
    assert "Content-Type: audio/wav" in answer.json()["message"]
    assert_nothing_kept(runtime)


async def test_multipart_with_one_file_part_is_the_upload(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer
) -> None:
    """curl -F / httpx files=: the one file part's bytes are stored, bit for bit."""
    answer = await suki_upload(client, who, files={"file": ("take.wav", WAV, "audio/wav")})
    assert answer.status_code == 202, answer.text
    runtime.worker.run_until_idle()
    recording_id = answer.json()["recording_id"]
    stored = next((runtime.settings.data_dir / "audio").rglob(f"{recording_id}.wav"))
    assert stored.read_bytes() == WAV  # a plain PCM WAV is stored bit-exact: no framing leaked


async def test_amigo_upload_takes_multipart(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer
) -> None:
    """The Amigo call upload takes the same forms."""
    answer = await client.post(
        f"/v1/{who.ws}/calls/CA1/audio",
        params={"channel": "inbound"},
        headers=who.bearer,
        files={"file": ("in.wav", WAV, "application/octet-stream")},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["call_sid"] == "CA1"


@pytest.mark.parametrize(
    ("content_type", "body", "status", "words"),
    [
        (FORM, closed(part(WAV), part(WAV, name="second")), 400, "one file part"),
        (FORM, closed(), 400, "no file part"),
        (FORM, part(WAV), 400, "closing boundary"),  # cut before the end
        ("multipart/form-data", closed(part(WAV)), 400, "boundary"),
        (FORM, closed(part(b"<html></html>", content_type="text/html")), 415, "text/html"),
        (FORM, b"--" + BOUNDARY.encode() + b"\r\nX: " + b"y" * 100_000 + b"\r\n\r\n", 400, ""),
        (FORM, b"garbage before any boundary" * 10, 400, "multipart"),
        ("multipart/mixed; boundary=x", closed(part(WAV)), 415, "multipart/form-data"),
        (f"multipart/form-data; boundary={'b' * 300}", b"--" + b"b" * 300, 400, "oundary"),
        (FORM, closed(part(WAV)) + b"x" * 70_000, 400, "framing"),
        (FORM, closed(part(WAV, name='a"; filename="../../etc/passwd')), 202, ""),
    ],
    ids=[
        "two-parts",
        "no-part",
        "cut",
        "no-boundary",
        "html-part",
        "huge-header",
        "garbage",
        "mixed",
        "long-boundary",
        "epilogue",
        "path-in-filename",
    ],
)
async def test_malformed_forms_are_refused_with_a_reason(
    client: httpx.AsyncClient,
    runtime: Runtime,
    who: Customer,
    content_type: str,
    body: bytes,
    status: int,
    words: str,
) -> None:
    """Two parts, none, a body cut before its closing boundary, no boundary, a part that is not
    audio, a header line past the limit, bytes that are no multipart at all, another multipart
    type, a boundary past 256 bytes, 70 KB after the closing boundary: a 4xx whose message says
    what is wrong, and nothing kept. (A file name is never used: a traversal in it is harmless.)"""
    answer = await suki_upload(client, who, headers={"content-type": content_type}, content=body)
    assert answer.status_code == status, answer.text
    if status == 202:
        return
    assert words in answer.json()["message"]
    assert_nothing_kept(runtime)


async def test_multipart_part_counts_against_the_size_limit(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer
) -> None:
    """The limit holds for a form too (8 MB in these settings), without a Content-Length."""

    async def chunks() -> AsyncIterator[bytes]:
        yield part(b"")[:-2]
        for _ in range(10):
            yield b"\0" * (1 << 20)

    answer = await suki_upload(client, who, headers={"content-type": FORM}, content=chunks())
    assert answer.status_code == 413
    assert_nothing_kept(runtime)
