"""nginx answers seeks itself (``TAPEVAULT_ACCEL_AUTHZ_SECONDS``, the shipped site's seek
location switched on), through real nginx with ``deploy/nginx/tapevault.conf``: the first
request of a playback asks tapevault (``auth_request``), whose answer nginx caches for at most
the lease; the playback's later plain range requests are served by nginx from the file, and
their delivery lines are folded into the playback's record.

Checked here: ranges byte for byte with tapevault's headers, served while tapevault itself is
frozen (the cached answer, not a request per range); conditional requests, 416 and other range
forms answered by tapevault; an expired or forged URL 403 from tapevault; the access record
exact (ranges, bytes, requests); a deleted recording stops at once (nginx cannot open the file)
and a removed signing key within the lease (bounded by when tapevault itself refuses)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.conftest import need
from tests.nginx import NGINX, Deployment, deployed
from tests.server import tapevault
from tests.support import wait_for, with_query

pytestmark = pytest.mark.server

LEASE_SECONDS = 5  # the longest allowed: a loaded machine still fits several requests in it


@pytest.fixture(scope="module")
def seeks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    need(NGINX is not None, "nginx is not installed (Debian: nginx-light)")
    with deployed(
        tmp_path_factory.mktemp("nginx-seeks"),
        "seeks",
        seeks=True,
        TAPEVAULT_ACCEL_AUTHZ_SECONDS=str(LEASE_SECONDS),
    ) as deployment:
        yield deployment


def test_seeks_are_served_by_nginx_from_one_answer_with_tapevaults_headers(
    seeks: Deployment,
) -> None:
    """After one question, nginx serves the playback's ranges while tapevault is frozen (no
    request per range), byte for byte, with tapevault's ETag, Last-Modified, Cache-Control,
    CORS headers, request id and HSTS; every delivery line carries the lease, and the
    playback's one record holds exactly the ranges, bytes and requests nginx sent."""
    url, recording_id, stored = seeks.media_url()
    size = len(stored)
    before = len(seeks.delivery_lines())
    player = {"origin": "https://player.example", "user-agent": "seeks-exact"}
    with seeks.client() as client:
        etag = client.head(url, headers=player).headers["etag"]  # tapevault: a HEAD
        first = client.get(url, headers={**player, "range": "bytes=0-1"})
        assert first.status_code == 206 and first.content == stored[:2]
        assert seeks.server.process is not None
        os.kill(seeks.server.process.pid, signal.SIGSTOP)
        try:
            middle = client.get(url, headers={**player, "range": "bytes=1000-54321"})
            suffix = client.get(url, headers={**player, "range": "bytes=-777"})
            tail = client.get(url, headers={**player, "range": f"bytes={size - 100}-"})
            whole = client.get(url, headers=player)
            with pytest.raises(httpx.TimeoutException):  # tapevault really is frozen
                httpx.get(f"{seeks.server.base}/healthz", timeout=0.5)
        finally:
            os.kill(seeks.server.process.pid, signal.SIGCONT)
    assert middle.status_code == 206 and middle.content == stored[1000:54322]
    assert middle.headers["content-range"] == f"bytes 1000-54321/{size}"
    assert suffix.status_code == 206 and suffix.content == stored[-777:]
    assert tail.status_code == 206 and tail.content == stored[-100:]
    assert whole.status_code == 200 and whole.content == stored
    for answer in (first, middle, suffix, tail, whole):
        h = answer.headers
        assert h["etag"] == etag
        assert h["cache-control"] == "private, no-store"
        assert h["content-type"] == "audio/wav"
        assert h.get_list("accept-ranges") == ["bytes"]
        assert h["access-control-allow-origin"] == "https://player.example"
        assert "content-range" in h["access-control-expose-headers"]
        assert h["vary"] == "origin"
        assert h["strict-transport-security"] == "max-age=31536000"
        assert h["x-request-id"]
        assert "x-tapevault-file" not in h and "x-tapevault-delivery" not in h
        assert "x-accel-expires" not in h
    assert first.headers["last-modified"] == whole.headers["last-modified"]
    lines = seeks.new_lines(before, 5)
    assert len({line["d"] for line in lines}) == 1 and ".L" in lines[0]["d"]
    assert [(line["s"], int(line["b"])) for line in lines] == [
        ("206", 2),
        ("206", 54322 - 1000),
        ("206", 777),
        ("206", 100),
        ("200", size),
    ]
    record = seeks.sealed_playback(recording_id, 6)  # the HEAD is one of its requests
    assert record["bytes_sent"] == size + 2 + 53322 + 777 + 100
    assert record["ranges"] == [[0, size - 1]]
    assert record["detail"]["statuses"] == {"200": 2, "206": 4}
    assert record["detail"]["proxy_until_ms"]  # how long nginx could serve without asking
    assert "unconfirmed" not in record["detail"] and "in_flight" not in record["detail"]


def test_separate_seeks_are_recorded_exactly(seeks: Deployment) -> None:
    """A seeking player's ranges: each listed, merged only where they touch, with their total."""
    url, recording_id, _stored = seeks.media_url()
    agent = {"user-agent": "seeks-ranges"}
    with seeks.client() as client:
        for spec in ("bytes=0-1", "bytes=100-199", "bytes=200-299", "bytes=5000-6023"):
            assert client.get(url, headers={**agent, "range": spec}).status_code == 206
    record = seeks.sealed_playback(recording_id, 4)
    assert record["ranges"] == [[0, 1], [100, 299], [5000, 6023]]
    assert record["bytes_sent"] == 2 + 100 + 100 + 1024


def test_conditional_requests_and_other_ranges_are_answered_by_tapevault(seeks: Deployment) -> None:
    """With an answer cached, a request with a precondition, several ranges or another
    spelling is still answered by tapevault (304, 412, If-Range, multipart); a range past the
    end gets nginx's 416 with ``bytes */len`` and tapevault's headers, as does a range whose
    end is before its start (RFC 9110 §14.2 lets a server reject it; tapevault alone ignores
    it); each is in the playback's record."""
    url, recording_id, stored = seeks.media_url()
    size = len(stored)
    with seeks.client() as client:
        etag = client.get(url, headers={"range": "bytes=0-0"}).headers["etag"]  # cached now
        not_modified = client.get(url, headers={"if-none-match": etag})
        failed = client.get(url, headers={"if-match": '"other"', "range": "bytes=0-9"})
        resumed = client.get(url, headers={"if-range": etag, "range": "bytes=10-19"})
        stale = client.get(url, headers={"if-range": '"other"', "range": "bytes=10-19"})
        beyond = client.get(url, headers={"range": f"bytes={size}-"})
        several = client.get(url, headers={"range": "bytes=0-9,20-29"})
        spaced = client.get(url, headers={"range": "bytes= 0-9"})
        backwards = client.get(url, headers={"range": "bytes=9-0"})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert failed.status_code == 412
    assert resumed.status_code == 206 and resumed.content == stored[10:20]
    assert stale.status_code == 200 and stale.content == stored
    for unsatisfiable in (beyond, backwards):
        assert unsatisfiable.status_code == 416
        assert unsatisfiable.headers.get_list("content-range") == [f"bytes */{size}"]
        assert unsatisfiable.headers.get_list("cache-control") == ["private, no-store"]
        assert stored[:16] not in unsatisfiable.content
    assert several.status_code == 206
    assert several.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert spaced.status_code == 206 and spaced.content == stored[:10]
    for answer in (not_modified, failed, several, spaced, stale):
        assert len(answer.headers.get_list("etag")) == 1
        assert answer.headers.get_list("cache-control") == ["private, no-store"]
    record = seeks.sealed_playback(recording_id, 9)
    assert record["detail"]["statuses"] == {"200": 1, "206": 4, "304": 1, "412": 1, "416": 2}


def test_expired_and_forged_urls_get_403_from_tapevault(seeks: Deployment) -> None:
    """An expired (issued by a server a day behind) or altered URL: tapevault's JSON 403 (its
    question answered no, never cached), and nginx sends nothing of the file."""
    url, _recording_id, _stored = seeks.media_url()
    old_url = seeks.expired_url()
    before = len(seeks.delivery_lines())
    query = dict(parse_qsl(urlsplit(url).query))
    with seeks.client() as client:
        for _ in range(2):  # the second time too: a refusal is never cached
            expired = client.get(old_url, headers={"range": "bytes=0-"})
            forged = client.get(
                with_query(url, s="A" * len(query["s"])), headers={"range": "bytes=0-9"}
            )
            assert expired.status_code == 403 and expired.json()["error"] == "url_expired"
            assert forged.status_code == 403 and forged.json()["error"] == "url_invalid"
    time.sleep(0.5)
    assert len(seeks.delivery_lines()) == before


def test_the_question_is_internal(seeks: Deployment) -> None:
    """A client can neither reach the question's location nor ask tapevault the question
    itself (its X-Tapevault-Authz header is dropped): it gets the audio, never the file's
    name in the store."""
    url, _recording_id, stored = seeks.media_url()
    with seeks.client() as client:
        inner = client.get("/_tapevault_authz", headers={"range": "bytes=0-9"})
        assert inner.status_code == 404
        asked = client.get(url.replace(seeks.nginx.base, ""), headers={"x-tapevault-authz": "1"})
        direct_api = client.get("/healthz", headers={"x-tapevault-authz": "1"})
    assert asked.status_code == 200 and asked.content == stored
    assert "x-tapevault-file" not in asked.headers
    assert direct_api.status_code == 200


def test_a_deleted_recording_stops_at_once(seeks: Deployment) -> None:
    """Deleting a recording while its playback's answer is cached: the next range is not
    served (nginx cannot open the file and hands the request to tapevault: 410)."""
    url, recording_id, stored = seeks.media_url()
    with seeks.client() as client:
        first = client.get(url, headers={"range": "bytes=0-99"})
        assert first.status_code == 206 and first.content == stored[:100]
        deleted = client.delete(f"/api/v1/recordings/{recording_id}", headers=seeks.admin)
        assert deleted.status_code in (200, 204), deleted.text
        after = client.get(url, headers={"range": "bytes=100-199"})
    assert after.status_code in (404, 410), after.text
    assert stored[100:200] not in after.content


def test_a_removed_signing_key_stops_serving_within_the_lease(seeks: Deployment) -> None:
    """`keys remove` while a playback's answer is cached: once tapevault itself refuses the
    URL, nginx refuses it too within TAPEVAULT_ACCEL_AUTHZ_SECONDS (its cached answers are
    all older than that refusal, and none is used longer than the lease)."""
    url, _recording_id, stored = seeks.media_url()
    direct = url.replace(seeks.nginx.base, seeks.server.base)
    old_key = dict(parse_qsl(urlsplit(url).query))["k"]
    with seeks.client() as client:
        assert client.get(url, headers={"range": "bytes=0-9"}).status_code == 206
        tapevault("keys", "rotate", env=seeks.server.env)
        tapevault("keys", "remove", old_key, env=seeks.server.env)

        def refused_by_tapevault() -> bool:
            return httpx.get(direct, headers={"range": "bytes=0-9"}).status_code == 403

        wait_for(refused_by_tapevault, what="tapevault refusing the removed key's URL")
        time.sleep(LEASE_SECONDS + 0.1)  # every answer nginx holds is older than the refusal
        after = client.get(url, headers={"range": "bytes=10-19"})
    assert after.status_code == 403 and after.json()["error"] in ("url_revoked", "url_invalid")
    assert stored[10:20] not in after.content
