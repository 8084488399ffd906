"""nginx sends the bytes (``TAPEVAULT_ACCEL_REDIRECT``), through real nginx with the shipped
``deploy/nginx/tapevault.conf``: tapevault validates and records each media GET and answers with
``X-Accel-Redirect``; nginx serves the range from the same file and reports what it sent in its
delivery log, which tapevault reads back into the playback's access record.

Checked here: ranges byte for byte with tapevault's headers (ETag, Last-Modified, CORS, HSTS),
conditional requests (304 and 412 from tapevault; If-None-Match, If-Range), 416, an expired
or forged URL (403 from tapevault, nginx sends nothing), the internal location unreachable and
a client's own X-Accel-* headers without effect, a client that reaches tapevault around nginx,
and the access record exact: which ranges, how many bytes — a client that leaves mid-range
included."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.conftest import need
from tests.nginx import LOCATION, NGINX, Deployment, deployed
from tests.support import wait_for, with_query

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def accel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """tapevault with TAPEVAULT_ACCEL_REDIRECT behind nginx with the shipped site, whose
    internal location serves tapevault's store and logs deliveries where tapevault reads."""
    need(NGINX is not None, "nginx is not installed (Debian: nginx-light)")
    with deployed(tmp_path_factory.mktemp("nginx-accel"), "accel") as deployment:
        yield deployment


def new_lines(accel: Deployment, before: int, count: int) -> list[dict[str, str]]:
    """The ``count`` delivery lines nginx wrote after the first ``before``."""

    def written() -> list[dict[str, str]] | None:
        lines = accel.delivery_lines()
        return lines[before:] if len(lines) >= before + count else None

    return wait_for(written, what=f"{count} delivery line(s)")


def test_ranges_are_sent_by_nginx_byte_exact_with_tapevaults_headers(accel: Deployment) -> None:
    """The whole file, a middle range, a suffix and an open range are sent by nginx (each has
    its delivery line) byte for byte, with tapevault's ETag, Last-Modified, Cache-Control,
    CORS headers, request id and HSTS, one Accept-Ranges; and the playback's one record holds
    exactly the ranges and bytes sent."""
    url, recording_id, stored = accel.media_url()
    size = len(stored)
    before = len(accel.delivery_lines())
    origin = {"origin": "https://player.example", "user-agent": "accel-exact"}
    with accel.client() as client:
        head = client.head(url, headers=origin)  # answered by tapevault itself
        assert head.status_code == 200
        whole = client.get(url, headers=origin)
        middle = client.get(url, headers={**origin, "range": "bytes=1000-54321"})
        suffix = client.get(url, headers={**origin, "range": "bytes=-777"})
        tail = client.get(url, headers={**origin, "range": f"bytes={size - 100}-"})
    assert whole.status_code == 200 and whole.content == stored
    assert middle.status_code == 206 and middle.content == stored[1000:54322]
    assert middle.headers["content-range"] == f"bytes 1000-54321/{size}"
    assert suffix.status_code == 206 and suffix.content == stored[-777:]
    assert tail.status_code == 206 and tail.content == stored[-100:]
    for answer in (whole, middle, suffix, tail):
        h = answer.headers
        assert h["etag"] == head.headers["etag"]
        assert h["last-modified"] == head.headers["last-modified"]
        assert h["cache-control"] == "private, no-store"
        assert h["content-type"] == "audio/wav"
        assert h.get_list("accept-ranges") == ["bytes"]
        assert h["access-control-allow-origin"] == "https://player.example"
        assert "content-range" in h["access-control-expose-headers"]
        assert h["vary"] == "origin"
        assert h["strict-transport-security"] == "max-age=31536000"
        assert h["x-request-id"]
        assert "x-accel-redirect" not in h and "x-tapevault-delivery" not in h
    lines = new_lines(accel, before, 4)
    assert [(line["s"], int(line["b"])) for line in lines] == [
        ("200", size),
        ("206", 54322 - 1000),
        ("206", 777),
        ("206", 100),
    ]
    record = accel.sealed_playback(recording_id, 5)  # the HEAD is one of its requests
    assert record["bytes_sent"] == size + 53322 + 777 + 100
    assert record["ranges"] == [[0, size - 1]]
    assert record["detail"]["statuses"] == {"200": 2, "206": 3}
    assert "unconfirmed" not in record["detail"] and "in_flight" not in record["detail"]


def test_ranges_of_a_seeking_player_are_recorded_exactly(accel: Deployment) -> None:
    """Separate seeks of one player: the record lists each range, merged only where they
    touch, and their byte total."""
    url, recording_id, stored = accel.media_url()
    agent = {"user-agent": "accel-seeks"}
    with accel.client() as client:
        for spec in ("bytes=0-1", "bytes=100-199", "bytes=200-299", "bytes=5000-6023"):
            answer = client.get(url, headers={**agent, "range": spec})
            assert answer.status_code == 206
    record = accel.sealed_playback(recording_id, 4)
    assert record["ranges"] == [[0, 1], [100, 299], [5000, 6023]]
    assert record["bytes_sent"] == 2 + 100 + 100 + 1024
    assert stored  # the file the ranges came from


def test_conditional_requests(accel: Deployment) -> None:
    """If-None-Match matching → 304 and If-Match failing → 412, both from tapevault (no
    delivery line); If-None-Match not matching and If-Range with the ETag → nginx sends the
    200 / 206 (nginx does not test them again against its own validators); If-Match that holds
    is answered by tapevault (nginx would have refused it)."""
    url, recording_id, stored = accel.media_url()
    with accel.client() as client:
        etag = client.head(url).headers["etag"]
        before = len(accel.delivery_lines())
        not_modified = client.get(url, headers={"if-none-match": etag})
        failed = client.get(url, headers={"if-match": '"other"', "range": "bytes=0-9"})
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert failed.status_code == 412
        changed = client.get(url, headers={"if-none-match": '"other"', "range": "bytes=0-9"})
        resumed = client.get(url, headers={"if-range": etag, "range": "bytes=10-19"})
        stale = client.get(url, headers={"if-range": '"other"', "range": "bytes=10-19"})
        held = client.get(url, headers={"if-match": etag, "range": "bytes=20-29"})
        since = client.get(url, headers={"if-modified-since": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert changed.status_code == 206 and changed.content == stored[:10]
    assert resumed.status_code == 206 and resumed.content == stored[10:20]
    assert stale.status_code == 200 and stale.content == stored
    assert held.status_code == 206 and held.content == stored[20:30]
    assert since.status_code == 200 and since.content == stored
    # nginx sent: the If-None-Match miss, the If-Range match and the If-Modified-Since one;
    # tapevault the 304, the 412, the stale If-Range (a 200 despite a Range) and the If-Match.
    lines = new_lines(accel, before, 3)
    time.sleep(0.5)
    assert len(accel.delivery_lines()) == before + 3
    assert [(line["s"], line["r"]) for line in lines] == [
        ("206", f"bytes 0-9/{len(stored)}"),
        ("206", f"bytes 10-19/{len(stored)}"),
        ("200", ""),
    ]
    record = accel.sealed_playback(recording_id, 8)
    assert record["detail"]["statuses"] == {"200": 3, "206": 3, "304": 1, "412": 1}
    assert record["bytes_sent"] == 10 + 10 + len(stored) + 10 + len(stored) + len(
        '{"code":412,"message":"Precondition failed."}'
    )


def test_unsatisfiable_and_multiple_ranges_are_answered_by_tapevault(accel: Deployment) -> None:
    """416 (computed from the stored size), a multipart answer, a range in another form than
    nginx parses alike and an invalid one (which RFC 9110 lets tapevault ignore, where nginx
    would answer 416) come from tapevault; nginx writes no delivery line for them."""
    url, _recording_id, stored = accel.media_url()
    size = len(stored)
    before = len(accel.delivery_lines())
    with accel.client() as client:
        beyond = client.get(url, headers={"range": f"bytes={size}-"})
        several = client.get(url, headers={"range": "bytes=0-9,20-29"})
        spaced = client.get(url, headers={"range": "bytes= 0-9"})  # not a plain form
        backwards = client.get(url, headers={"range": "bytes=9-0"})  # invalid: ignored → 200
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    assert several.status_code == 206
    assert several.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert stored[:10] in several.content and stored[20:30] in several.content
    assert spaced.status_code == 206 and spaced.content == stored[:10]
    assert backwards.status_code == 200 and backwards.content == stored
    time.sleep(0.5)
    assert len(accel.delivery_lines()) == before


def test_expired_and_forged_urls_get_403_from_tapevault(accel: Deployment) -> None:
    """A URL that expired (issued by a server whose clock is a day behind) or was altered is
    refused by tapevault with its JSON 403; nginx sends nothing of the file."""
    url, _recording_id, _stored = accel.media_url()
    old_url = accel.expired_url()
    before = len(accel.delivery_lines())
    query = dict(parse_qsl(urlsplit(url).query))
    with accel.client() as client:
        expired = client.get(old_url, headers={"range": "bytes=0-"})
        forged = client.get(with_query(url, s="A" * len(query["s"])))
        stretched = client.get(with_query(url, e=str(int(query["e"]) + 3600)))
    assert expired.json()["error"] == "url_expired"
    assert forged.json()["error"] == "url_invalid"
    assert stretched.json()["error"] == "url_invalid"
    for answer in (expired, forged, stretched):
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/json"
    time.sleep(0.5)
    assert len(accel.delivery_lines()) == before


def test_internal_location_and_client_accel_headers_have_no_effect(accel: Deployment) -> None:
    """The internal location answers 404 to a client; a client's own X-Accel-Redirect (or
    other X-Accel-*) request header changes nothing, on a media URL or any other route."""
    url, recording_id, stored = accel.media_url()
    key = next((accel.server.data_dir / "audio").rglob(f"{recording_id}.wav"))
    relative = key.relative_to(accel.server.data_dir / "audio").as_posix()
    sneaky = {
        "x-accel-redirect": f"{LOCATION}{relative}",
        "x-accel-limit-rate": "1",
        "x-accel-buffering": "yes",
    }
    with accel.client() as client:
        direct = client.get(f"{LOCATION}{relative}")
        assert direct.status_code == 404 and stored[:4] not in direct.content
        health = client.get("/healthz", headers=sneaky)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ranged = client.get(url, headers={**sneaky, "range": "bytes=0-99"})
        assert ranged.status_code == 206 and ranged.content == stored[:100]


def test_a_client_around_nginx_gets_the_bytes_from_tapevault(accel: Deployment) -> None:
    """A client that reaches tapevault's port directly (not a trusted proxy) is never answered
    with X-Accel-Redirect: it gets the bytes, and they are recorded as sent."""
    url, recording_id, stored = accel.media_url()
    direct = url.replace(accel.nginx.base, accel.server.base)
    transport = httpx.HTTPTransport(local_address="127.0.0.3")
    with httpx.Client(transport=transport, timeout=30) as client:
        answer = client.get(direct, headers={"range": "bytes=0-99"})
    assert answer.status_code == 206 and answer.content == stored[:100]
    assert "x-accel-redirect" not in answer.headers
    record = accel.sealed_playback(recording_id, 1)
    assert record["ranges"] == [[0, 99]] and record["bytes_sent"] == 100


def test_a_client_leaving_mid_range_is_recorded_with_what_nginx_sent(accel: Deployment) -> None:
    """A client that reads the start of a 19 MB file and hangs up: the record holds exactly
    the bytes nginx says it sent (its delivery line), from the start, not the file's size."""
    url, recording_id, stored = accel.media_url(seconds=600.0)
    size = len(stored)
    before = len(accel.delivery_lines())
    with accel.client() as client, client.stream("GET", url) as answer:
        assert answer.status_code == 200
        first = next(answer.iter_raw(65536))
        assert stored.startswith(first)
    (line,) = new_lines(accel, before, 1)
    sent = int(line["b"])
    assert line["s"] == "200" and 0 < sent < size
    record = accel.sealed_playback(recording_id, 1)
    assert record["bytes_sent"] == sent
    assert record["ranges"] == [[0, sent - 1]]
