"""tapevault.client against in-process fakes (httpx.MockTransport): retries, errors, waiting
and resumable downloads, with no sockets and no sleeping (sleep is injected and recorded)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tapevault.client import (
    AsyncClient,
    Client,
    ClientError,
    Gone,
    IntegrityError,
    NotReady,
    ProtocolError,
    Recording,
    Retry,
    ServerError,
    Source,
    TransportError,
)

BASE = "http://vault.test"
AUDIO = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(AUDIO).hexdigest()
ETAG = f'"{SHA[:32]}"'


class Media:
    """A ranged media server for one file: Range, If-Range, expiring URLs; every request kept."""

    def __init__(self, body: bytes = AUDIO, etag: str = ETAG) -> None:
        self.body = body
        self.etag = etag
        self.requests: list[httpx.Request] = []
        self.expired: set[str] = set()
        self.issued = 0
        self.fail_next: list[int | Exception] = []  # statuses or exceptions for the next requests
        self.cut_after: int | None = None  # send only this many bytes of the next answer
        self.asynchronous = False  # cut bodies for the AsyncClient

    def fresh_url(self) -> str:
        self.issued += 1
        return f"{BASE}/media/r.wav?e={self.issued}"

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail_next:
            failure = self.fail_next.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(failure, json={"code": failure, "message": "try later"})
        if str(request.url) in self.expired:
            return httpx.Response(403, json={"error": "url_expired", "message": "expired"})
        headers = {"etag": self.etag, "accept-ranges": "bytes"}
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", request.headers.get("range", ""))
        if_range = request.headers.get("if-range")
        if match is None or (if_range is not None and if_range != self.etag):
            return self._answer(200, headers, self.body)
        first, last = int(match.group(1)), min(int(match.group(2)), len(self.body) - 1)
        if first >= len(self.body):
            return httpx.Response(416, headers={"content-range": f"bytes */{len(self.body)}"})
        headers["content-range"] = f"bytes {first}-{last}/{len(self.body)}"
        return self._answer(206, headers, self.body[first : last + 1])

    def _answer(self, status: int, headers: dict[str, str], content: bytes) -> httpx.Response:
        if self.cut_after is None:
            return httpx.Response(status, headers=headers, content=content)
        cut, self.cut_after = self.cut_after, None
        stream = _AsyncBroken(content[:cut]) if self.asynchronous else _Broken(content[:cut])
        return httpx.Response(status, headers=headers, stream=stream)

    def ranges(self) -> list[str | None]:
        return [r.headers.get("range") for r in self.requests]


class _Broken(httpx.SyncByteStream):
    """A body that stops with a connection error after some bytes."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield self.head
        raise httpx.ReadError("connection reset")


class _AsyncBroken(httpx.AsyncByteStream):
    """The same, for the AsyncClient."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield self.head
        raise httpx.ReadError("connection reset")


def client(handler, sleeps: list[float] | None = None, **kwargs) -> Client:  # type: ignore[no-untyped-def]
    recorded = sleeps if sleeps is not None else []
    return Client(
        BASE,
        suki_token="t",
        transport=httpx.MockTransport(handler),
        sleep=recorded.append,
        **kwargs,
    )


def source(sha256: str | None = SHA) -> Source:
    return Source(key="recording:r", sha256=sha256, size=len(AUDIO))


# --- retries and errors --------------------------------------------------------------------------


def test_a_503_is_retried_after_the_servers_retry_after() -> None:
    """503 with Retry-After: 7 is retried after 7 s, then the answer is read."""
    answers = [httpx.Response(503, headers={"retry-after": "7"}, json={"code": 503})]
    answers.append(
        httpx.Response(200, json={"ambient_session_id": "s", "status": "created", "recordings": []})
    )
    sleeps: list[float] = []
    with client(lambda request: answers.pop(0), sleeps) as c:
        assert c.status("s").session_id == "s"
    assert sleeps == [7.0]


def test_connection_errors_are_retried_with_bounded_jittered_backoff() -> None:
    """A server that never answers costs exactly ``attempts`` tries, with waits that grow
    within their bounds, then one TransportError."""
    calls = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("refused")

    sleeps: list[float] = []
    retry = Retry(attempts=4, base=1, cap=3)
    with client(refuse, sleeps, retry=retry) as c, pytest.raises(TransportError):
        c.status("s")
    assert len(calls) == 4
    assert len(sleeps) == 3 and all(
        0 <= s <= bound for s, bound in zip(sleeps, [1, 2, 3], strict=True)
    )


def test_an_upload_is_not_repeated_after_a_500() -> None:
    """A POST the server may have carried out is not sent twice: one try, then ServerError."""
    calls = []

    def fail(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500, json={"code": 500, "message": "An internal error occurred."})

    with client(fail) as c, pytest.raises(ServerError):
        c.upload("s", b"RIFF")
    assert len(calls) == 1
    assert calls[0].headers["content-type"] == "audio/wav"


def test_410_is_final_and_says_why() -> None:
    """410 is raised at once as Gone with the server's reason, never retried."""
    calls = []
    body = {
        "code": 410,
        "message": "Recording has expired",
        "reason": "expired",
        "at": 5,
        "policy": "tenant",
    }

    def gone(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(410, json=body)

    with client(gone) as c, pytest.raises(Gone) as raised:
        c.recording_urls("s")
    assert len(calls) == 1
    assert (raised.value.reason, raised.value.at, raised.value.policy) == ("expired", 5, "tenant")


# --- wait_until_ready ----------------------------------------------------------------------------


def _session(status: str) -> dict[str, object]:
    return {
        "ambient_session_id": "s",
        "status": "completed",
        "recordings": [
            {
                "recording_id": "r",
                "sequence_number": 1,
                "status": status,
                "sha256": SHA,
                "bytes": len(AUDIO),
            }
        ],
    }


def test_wait_until_ready_follows_retry_after_until_the_recordings_are_ready() -> None:
    """404 + Retry-After twice, then 200: waits the server's 3 s twice and returns the status."""
    not_yet = [2]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/recording"):
            if not_yet[0]:
                not_yet[0] -= 1
                return httpx.Response(404, headers={"retry-after": "3"}, json={"code": 404})
            return httpx.Response(200, json={"recordings": []})
        return httpx.Response(200, json=_session("available"))

    sleeps: list[float] = []
    with client(handler, sleeps) as c:
        status = c.wait_until_ready("s", timeout=60)
    assert sleeps == [3.0, 3.0]
    assert status.recordings[0].sha256 == SHA


def test_wait_until_ready_gives_up_at_its_timeout() -> None:
    """A session that never becomes ready ends in NotReady once the timeout has been slept."""
    clock = [0.0]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, headers={"retry-after": "2"}, json={"code": 404})

    c = client(handler)
    c._sleep = lambda s: clock.__setitem__(0, clock[0] + s)  # type: ignore[method-assign]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tapevault.client._sync.time.monotonic", lambda: clock[0])
        with pytest.raises(NotReady):
            c.wait_until_ready("s", timeout=9)
    assert clock[0] == 9


# --- downloads -----------------------------------------------------------------------------------


def test_download_in_chunks_checks_sha256_and_reports_progress(tmp_path: Path) -> None:
    """A file fetched in 40 KiB ranges arrives whole, verified, with progress to the end."""
    media = Media()
    seen: list[tuple[int, int | None]] = []
    with client(media.handler, chunk_bytes=40 * 1024) as c:
        path = c.download_url(
            source(), media.fresh_url, tmp_path / "a.wav", progress=lambda d, t: seen.append((d, t))
        )
    assert path.read_bytes() == AUDIO
    assert media.ranges() == ["bytes=0-40959", "bytes=40960-81919", "bytes=81920-122879"]
    assert seen[-1] == (len(AUDIO), len(AUDIO))
    assert not (tmp_path / "a.wav.part").exists() and not (tmp_path / "a.wav.part.json").exists()


def test_a_broken_connection_resumes_where_it_stopped(tmp_path: Path) -> None:
    """A body cut after 1000 bytes is continued from byte 1000 with If-Range, not restarted."""
    media = Media()
    media.cut_after = 1000
    with client(media.handler, chunk_bytes=1 << 20) as c:
        path = c.download_url(source(), media.fresh_url, tmp_path / "a.wav")
    assert path.read_bytes() == AUDIO
    assert media.ranges() == ["bytes=0-1048575", "bytes=1000-1049575"]
    assert media.requests[1].headers["if-range"] == ETAG


def test_a_part_file_left_by_an_earlier_run_is_continued(tmp_path: Path) -> None:
    """A .part (and its ETag) from a run that died is continued from its end."""
    target = tmp_path / "a.wav"
    (tmp_path / "a.wav.part").write_bytes(AUDIO[:5000])
    (tmp_path / "a.wav.part.json").write_text(json.dumps({"key": "recording:r", "etag": ETAG}))
    media = Media()
    with client(media.handler) as c:
        c.download_url(source(), media.fresh_url, target)
    assert target.read_bytes() == AUDIO
    assert media.ranges()[0].startswith("bytes=5000-")  # type: ignore[union-attr]
    assert media.requests[0].headers["if-range"] == ETAG


def test_a_changed_file_starts_over(tmp_path: Path) -> None:
    """If-Range with a stale ETag gets the whole file (200): the .part is replaced, not mixed."""
    target = tmp_path / "a.wav"
    (tmp_path / "a.wav.part").write_bytes(b"x" * 5000)
    (tmp_path / "a.wav.part.json").write_text(json.dumps({"key": "recording:r", "etag": '"old"'}))
    media = Media()
    with client(media.handler) as c:
        c.download_url(source(), media.fresh_url, target)
    assert target.read_bytes() == AUDIO
    assert len(media.requests) == 1


def test_an_expired_url_is_replaced_and_the_download_goes_on(tmp_path: Path) -> None:
    """403 url_expired in the middle: one fresh URL, and the next range continues."""
    media = Media()
    progress = []

    def expire_first_url(done: int, total: int | None) -> None:
        progress.append(done)
        media.expired.add(f"{BASE}/media/r.wav?e=1")

    with client(media.handler, chunk_bytes=40 * 1024) as c:
        c.download_url(source(), media.fresh_url, tmp_path / "a.wav", progress=expire_first_url)
    assert (tmp_path / "a.wav").read_bytes() == AUDIO
    assert media.issued == 2
    assert media.ranges() == [
        "bytes=0-40959",
        "bytes=40960-81919",
        "bytes=40960-81919",
        "bytes=81920-122879",
    ]


def test_5xx_in_a_download_is_retried_but_410_is_not(tmp_path: Path) -> None:
    """A 502 mid-download is retried; a 410 ends it with Gone and keeps the .part."""
    media = Media()
    media.fail_next = [502]
    with client(media.handler) as c:
        c.download_url(source(), media.fresh_url, tmp_path / "a.wav")
    assert (tmp_path / "a.wav").read_bytes() == AUDIO
    media = Media()
    media.fail_next = [410]
    with client(media.handler) as c, pytest.raises(Gone):
        c.download_url(source(), media.fresh_url, tmp_path / "b.wav")
    assert len(media.requests) == 1


def test_a_corrupted_byte_is_detected_and_the_part_removed(tmp_path: Path) -> None:
    """One flipped byte in the .part fails the sha256: IntegrityError, nothing left in place."""
    target = tmp_path / "a.wav"
    damaged = bytearray(AUDIO[:5000])
    damaged[1234] ^= 0xFF
    (tmp_path / "a.wav.part").write_bytes(bytes(damaged))
    (tmp_path / "a.wav.part.json").write_text(json.dumps({"key": "recording:r", "etag": ETAG}))
    media = Media()
    with client(media.handler) as c, pytest.raises(IntegrityError):
        c.download_url(source(), media.fresh_url, target)
    assert not target.exists() and not (tmp_path / "a.wav.part").exists()


def test_a_range_answer_from_the_wrong_offset_is_refused(tmp_path: Path) -> None:
    """A 206 that does not start where asked is a ProtocolError, never written in."""

    def wrong(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            206, headers={"content-range": "bytes 10-19/100"}, content=b"0123456789"
        )

    with client(wrong) as c, pytest.raises(ProtocolError):
        c.download_url(Source(key="k"), lambda: f"{BASE}/m.wav", tmp_path / "a.wav")


def test_a_server_sending_more_than_it_announced_is_stopped(tmp_path: Path) -> None:
    """A 206 whose body outgrows its Content-Range is a ProtocolError (no disk filled)."""

    def too_much(request: httpx.Request) -> httpx.Response:
        return httpx.Response(206, headers={"content-range": "bytes 0-9/10"}, content=b"x" * 20)

    with client(too_much) as c, pytest.raises(ProtocolError):
        c.download_url(Source(key="k"), lambda: f"{BASE}/m.wav", tmp_path / "a.wav")


def test_empty_range_answers_do_not_loop_forever(tmp_path: Path) -> None:
    """A 206 that promises bytes but sends none is a ProtocolError, not an endless loop."""

    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(206, headers={"content-range": "bytes 0-9/100"}, content=b"")

    with client(empty) as c, pytest.raises(ProtocolError):
        c.download_url(Source(key="k"), lambda: f"{BASE}/m.wav", tmp_path / "a.wav")


def test_a_file_of_another_size_than_the_recordings_is_refused(tmp_path: Path) -> None:
    """The status says 10 bytes, the server serves 100: IntegrityError, nothing in place."""
    media = Media(body=b"y" * 100)
    with client(media.handler) as c, pytest.raises(IntegrityError):
        c.download_url(Source(key="k", size=10), media.fresh_url, tmp_path / "a.wav")
    assert not (tmp_path / "a.wav").exists()


def test_download_of_a_recording_asks_the_session_for_a_download_url(tmp_path: Path) -> None:
    """``download(recording)`` gets its URL from ?download=true and checks the status's sha256."""
    media = Media()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/recording"):
            assert request.url.params["download"] == "true"
            return httpx.Response(
                200,
                json={
                    "recordings": [
                        {
                            "recording_id": "r",
                            "presigned_url": f"{BASE}/media/r.wav?e=1",
                            "expires_at": 1,
                            "sequence_number": 1,
                        }
                    ]
                },
            )
        return media.handler(request)

    recording = Recording("r", "s", 1, "available", size_bytes=len(AUDIO), sha256=SHA)
    with client(handler) as c:
        assert c.download(recording, tmp_path / "s-1.wav").read_bytes() == AUDIO


# --- the async client ----------------------------------------------------------------------------


async def test_the_async_client_resumes_and_replaces_an_expired_url(tmp_path: Path) -> None:
    """AsyncClient: a cut body resumes with If-Range, an expired URL is replaced, sha256 ok."""
    media = Media()
    media.cut_after = 700
    media.expired.add(f"{BASE}/media/r.wav?e=1")
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    media.asynchronous = True

    async def handler(request: httpx.Request) -> httpx.Response:
        return media.handler(request)

    async def fresh() -> str:
        return media.fresh_url()

    async with AsyncClient(BASE, transport=httpx.MockTransport(handler), sleep=sleep) as c:
        path = await c.download_url(source(), fresh, tmp_path / "a.wav")
    assert path.read_bytes() == AUDIO
    assert media.issued == 2
    assert media.ranges()[-1].startswith("bytes=700-")  # type: ignore[union-attr]


async def test_the_async_wait_stops_at_once_on_410() -> None:
    """AsyncClient.wait_until_ready: one request, then Gone; nothing slept."""
    calls = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(410, json={"code": 410, "message": "gone", "reason": "expired"})

    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with AsyncClient(
        BASE, suki_token="t", transport=httpx.MockTransport(handler), sleep=sleep
    ) as c:
        with pytest.raises(Gone):
            await c.wait_until_ready("s")
    assert len(calls) == 1 and sleeps == []


def test_the_client_imports_nothing_of_the_server() -> None:
    """``import tapevault.client`` loads no server module, so it can be shipped alone."""
    code = (
        "import sys, tapevault.client; "
        "print(sorted(m for m in sys.modules if m.startswith('tapevault') "
        "and not m.startswith('tapevault.client') and m != 'tapevault'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# --- hostile answers and concurrent runs ---------------------------------------------------------


def test_a_hostile_session_id_cannot_name_a_file_outside_the_directory() -> None:
    """A server answering with ``../`` in an id cannot make ``filename`` leave the directory."""
    for session_id in ("../../etc/evil", "/abs", "..", "a\\b", ".hidden", "x\x00y"):
        name = Recording("r", session_id, 1, "available").filename
        assert "/" not in name and "\\" not in name and "\x00" not in name, name
        assert not name.startswith("."), name
    assert Recording("r", "ffs-1a2B_c.d", 2, "available").filename == "ffs-1a2B_c.d-2.wav"


def test_a_status_with_malformed_numbers_is_a_protocol_error() -> None:
    """A size that is not a whole number, or a sha256 that is not one, is refused on arrival."""
    for field, value in (("bytes", "lots"), ("bytes", -1), ("bytes", True), ("sha256", 7)):
        recording = {"recording_id": "r", "status": "available", field: value}
        body = {"ambient_session_id": "s", "status": "completed", "recordings": [recording]}
        fake = client(lambda request, b=body: httpx.Response(200, json=b))
        with fake as c, pytest.raises(ProtocolError):
            c.status("s")


def test_two_downloads_into_one_file_are_refused(tmp_path: Path) -> None:
    """While one download writes ``a.wav.part``, a second into ``a.wav`` is refused at once
    (an flock, released when its process dies), and the first completes intact."""
    media = Media()
    refused: list[Exception] = []

    def second(done: int, total: int | None) -> None:
        if refused:
            return
        try:
            with client(Media().handler) as other:
                other.download_url(source(), media.fresh_url, tmp_path / "a.wav")
        except ClientError as exc:
            refused.append(exc)
        else:
            refused.append(AssertionError("the second download was not refused"))

    with client(media.handler, chunk_bytes=40 * 1024) as c:
        path = c.download_url(source(), media.fresh_url, tmp_path / "a.wav", progress=second)
    assert isinstance(refused[0], ClientError), refused
    assert path.read_bytes() == AUDIO


def test_retry_after_zero_does_not_hammer_the_server() -> None:
    """A 404 with ``Retry-After: 0`` still waits a little between polls (never a busy loop)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, headers={"retry-after": "0"}, json={"code": 404})

    sleeps: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    c = client(handler, sleeps)
    c._sleep = sleep  # type: ignore[method-assign]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tapevault.client._sync.time.monotonic", lambda: clock[0])
        with pytest.raises(NotReady):
            c.wait_until_ready("s", timeout=5)
    assert sleeps and min(sleeps) >= 0.5 and len(sleeps) <= 10


def test_a_url_invalidated_by_key_removal_is_replaced(tmp_path: Path) -> None:
    """403 url_invalid (its signing key was removed) is worth one fresh URL, like url_expired."""
    media = Media()
    media.fail_next = []
    first = [True]

    def handler(request: httpx.Request) -> httpx.Response:
        if first[0]:
            first[0] = False
            return httpx.Response(403, json={"error": "url_invalid", "message": "new URL"})
        return media.handler(request)

    with client(handler) as c:
        c.download_url(source(), media.fresh_url, tmp_path / "a.wav")
    assert (tmp_path / "a.wav").read_bytes() == AUDIO and media.issued == 2


def test_a_recording_gone_mid_download_leaves_no_part_behind(tmp_path: Path) -> None:
    """410 in the middle: Gone, and the partial audio is removed (it will never complete)."""
    media = Media()

    def gone_after_first(done: int, total: int | None) -> None:
        media.fail_next = [410]

    with client(media.handler, chunk_bytes=40 * 1024) as c, pytest.raises(Gone):
        c.download_url(source(), media.fresh_url, tmp_path / "a.wav", progress=gone_after_first)
    assert list(tmp_path.iterdir()) == []


def test_a_file_already_downloaded_and_verified_is_not_fetched_again(tmp_path: Path) -> None:
    """Re-running a finished download checks the file's sha256 and sends no request."""
    media = Media()
    with client(media.handler) as c:
        c.download_url(source(), media.fresh_url, tmp_path / "a.wav")
        asked = len(media.requests)
        c.download_url(source(), media.fresh_url, tmp_path / "a.wav")
    assert len(media.requests) == asked and media.issued == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def test_a_tampered_etag_in_the_part_file_is_not_sent(tmp_path: Path) -> None:
    """A .part.json whose ETag carries a line break is distrusted: the download starts over
    instead of failing on a header it cannot send."""
    (tmp_path / "a.wav.part").write_bytes(AUDIO[:100])
    (tmp_path / "a.wav.part.json").write_text(
        json.dumps({"key": "recording:r", "etag": '"x"\r\nx-evil: 1 "'})
    )
    media = Media()
    with client(media.handler) as c:
        c.download_url(source(), media.fresh_url, tmp_path / "a.wav")
    assert (tmp_path / "a.wav").read_bytes() == AUDIO
    assert media.ranges()[0] == "bytes=0-8388607"


def test_a_part_killed_before_its_rename_is_finished_without_refetching(tmp_path: Path) -> None:
    """A whole .part (killed between its last byte and the rename), size unknown: the server's
    416 ``bytes */N`` says it is complete; it is verified and moved into place."""
    (tmp_path / "a.wav.part").write_bytes(AUDIO)
    (tmp_path / "a.wav.part.json").write_text(json.dumps({"key": "k", "etag": ETAG}))
    media = Media()
    with client(media.handler) as c:
        c.download_url(Source(key="k", sha256=SHA), media.fresh_url, tmp_path / "a.wav")
    assert (tmp_path / "a.wav").read_bytes() == AUDIO
    assert media.ranges() == [f"bytes={len(AUDIO)}-{len(AUDIO) + 8 * 1024 * 1024 - 1}"]


def test_a_part_longer_than_the_file_starts_over(tmp_path: Path) -> None:
    """A .part longer than the file (416 with another size) is discarded and fetched again."""
    (tmp_path / "a.wav.part").write_bytes(AUDIO + b"junk")
    (tmp_path / "a.wav.part.json").write_text(json.dumps({"key": "k", "etag": ETAG}))
    media = Media()
    with client(media.handler) as c:
        c.download_url(Source(key="k", sha256=SHA), media.fresh_url, tmp_path / "a.wav")
    assert (tmp_path / "a.wav").read_bytes() == AUDIO
    assert media.ranges()[1] == "bytes=0-8388607"
