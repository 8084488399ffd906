"""``/metrics`` of a real ``tapevault serve`` with two processes (prometheus-client's
multiprocess mode): a scripted set of requests moves every counter by exactly what it did,
summed over both processes; a killed process's counts stay and its live gauges go."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import sqlalchemy
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tapevault.core.model import SigningKey
from tapevault.core.signing import UrlMode, UrlSigner
from tests.server import Server, free_port
from tests.support import Sender, make_session, until, wait_for, ws_url

pytestmark = pytest.mark.server

RECORDING_URLS = "/api/v1/ambient/session/{session_id}/recording"
MEDIA_AUDIO = "/media/{recording_id}.wav"
DURATION = "http_server_request_duration_seconds"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def listener_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, listener_port: int) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("metrics") / "data")
    srv.start(
        TAPEVAULT_PROCESSES="2",
        TAPEVAULT_PURGE_INTERVAL="1s",
        TAPEVAULT_METRICS_LISTEN=f"127.0.0.1:{listener_port}",
    )
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def tenant(server: Server) -> dict[str, str]:
    return server.tenant()


def bearer(tenant: dict[str, str]) -> dict[str, str]:
    return {"authorization": f"Bearer {tenant['api_key']}"}


def scrape(server: Server, tenant: dict[str, str]) -> Samples:
    """Every sample of one scrape, parsed by prometheus-client's own text parser."""
    response = requests.get(f"{server.base}/metrics", headers=bearer(tenant), timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_of(samples: Samples, route: str, method: str, status: int) -> float:
    return value(
        samples,
        f"{DURATION}_count",
        http_request_method=method,
        http_route=route,
        http_response_status_code=str(status),
    )


def expired_url(server: Server, url: str) -> str:
    """``url`` signed again, correctly, with an expiry in the past (the server's newest key)."""
    db = sqlalchemy.create_engine(f"sqlite:///{server.data_dir}/tapevault.db")
    try:
        with db.connect() as conn:
            key_id, secret_hex, created_ms = conn.execute(
                sqlalchemy.text(
                    "SELECT key_id, secret_hex, created_ms FROM signing_keys "
                    "ORDER BY created_ms DESC, key_id DESC LIMIT 1"
                )
            ).one()
    finally:
        db.dispose()
    signer = UrlSigner([SigningKey(key_id, bytes.fromhex(secret_hex), created_ms)])
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    recording_id = parts.path.removeprefix("/media/").removesuffix(".wav")
    query = signer.sign(recording_id, UrlMode.STREAM, int(time.time()) - 60, params["p"])
    return f"{server.base}{parts.path}?{query}"


def unmatched_after(server: Server, tenant: dict[str, str], count: int) -> float:
    """Send ``count`` requests to unknown paths; the total of such 404s once they are all in."""
    base = requests_of(scrape(server, tenant), "unmatched", "GET", 404)
    for _ in range(count):
        requests.get(f"{server.base}/no/such/path", timeout=10)

    def counted() -> float | None:
        total = requests_of(scrape(server, tenant), "unmatched", "GET", 404)
        return total if total == base + count else None

    return wait_for(counted, 15, f"{count} unmatched requests counted", 0.1)


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


def test_counters_move_by_exactly_the_scripted_requests(
    server: Server, tenant: dict[str, str]
) -> None:
    """N recording-URL requests, M Range requests, K refusals of each reason, an unknown path,
    a purge and a hold: each counter moves by exactly that, summed over both processes."""
    n, m, k = 12, 10, 3
    token = server.token(tenant["partner_id"])
    suki = {"sdp_suki_token": token}
    session_id, _ = make_session(server, token, seconds=1.0)
    doomed, _ = make_session(server, token, seconds=1.0)
    server.wait_jobs_done()
    before = scrape(server, tenant)

    urls = []
    for _ in range(n):
        # A new connection each: the kernel spreads them over both processes.
        answer = requests.get(
            f"{server.base}/api/v1/ambient/session/{session_id}/recording", headers=suki, timeout=10
        )
        assert answer.status_code == 200
        urls.append(answer.json()["recordings"][0]["presigned_url"])
    url = urls[0]
    for _ in range(m):
        part = requests.get(url, headers={"range": "bytes=0-99"}, timeout=10)
        assert part.status_code == 206 and len(part.content) == 100

    altered = url.replace("&s=", "&s=A", 1)[: len(url)]
    stale = expired_url(server, url)
    link = requests.post(
        f"{server.base}/api/v1/sessions/{session_id}/player-links",
        headers=bearer(tenant),
        json={},
        timeout=10,
    )
    assert link.status_code == 201, link.text
    link_id, secret = link.json()["link_id"], link.json()["url"].split("#k=")[1]
    playlist = requests.get(
        f"{server.base}/player/{link_id}/playlist", headers={"x-player-key": secret}, timeout=10
    )
    revoked_url = playlist.json()["tracks"][0]["url"]
    revoked = requests.delete(
        f"{server.base}/api/v1/player-links/{link_id}", headers=bearer(tenant), timeout=10
    )
    assert revoked.status_code == 200, revoked.text
    for bad, error in (
        (altered, "url_invalid"),
        (stale, "url_expired"),
        (revoked_url, "url_revoked"),
    ):
        for _ in range(k):
            refused = requests.get(bad, timeout=10)
            assert refused.status_code == 403 and refused.json()["error"] == error

    for _ in range(2):
        missing = requests.get(f"{server.base}/no/such/{os.urandom(4).hex()}", timeout=10)
        assert missing.status_code == 404

    held = requests.put(
        f"{server.base}/api/v1/sessions/{session_id}/hold",
        headers=bearer(tenant),
        json={"reason": "litigation"},
        timeout=10,
    )
    assert held.status_code == 200, held.text
    lifted = requests.delete(
        f"{server.base}/api/v1/sessions/{session_id}/hold", headers=bearer(tenant), timeout=10
    )
    assert lifted.status_code == 200, lifted.text

    short = requests.put(
        f"{server.base}/api/v1/sessions/{doomed}/retention",
        headers=bearer(tenant),
        json={"retention": "1s"},
        timeout=10,
    )
    assert short.status_code == 200, short.text

    def purged() -> list[dict[str, Any]] | None:
        view = requests.get(
            f"{server.base}/api/v1/sessions/{doomed}", headers=bearer(tenant), timeout=10
        ).json()
        gone = [r for r in view["recordings"] if r["status"] == "expired"]
        return gone if gone and len(gone) == len(view["recordings"]) else None

    expired = wait_for(purged, 30, "the purge of the short-retention session", 0.2)
    hold = "/api/v1/sessions/{session_id}/hold"
    expected = {
        (f"{DURATION}_count", RECORDING_URLS, "GET", "200"): n,
        (f"{DURATION}_count", MEDIA_AUDIO, "GET", "206"): m,
        (f"{DURATION}_count", MEDIA_AUDIO, "GET", "403"): 3 * k,
        (f"{DURATION}_count", "unmatched", "GET", "404"): 2,
        (f"{DURATION}_count", hold, "PUT", "200"): 1,
        (f"{DURATION}_count", hold, "DELETE", "200"): 1,
        ("tapevault_media_bytes_sent_total",): 100 * m,
        ("tapevault_range_requests_total", "206"): m,
        ("tapevault_signed_url_refusals_total", "invalid"): k,
        ("tapevault_signed_url_refusals_total", "expired"): k,
        ("tapevault_signed_url_refusals_total", "revoked"): k,
        ("tapevault_legal_holds_total", "set"): 1,
        ("tapevault_legal_holds_total", "cleared"): 1,
        ("tapevault_purged_recordings_total",): len(expired),
        # The store was read for every 206 (one read_range each, timed to its first chunk).
        ("tapevault_store_operation_seconds_count", "read_range"): m,
    }

    def deltas(after: Samples) -> dict[tuple[str, ...], float]:
        found = {}
        for key in expected:
            name, *rest = key
            if name.startswith(DURATION):
                route, method, status = rest
                labels = {
                    "http_route": route,
                    "http_request_method": method,
                    "http_response_status_code": status,
                }
            elif rest:
                label = {
                    "tapevault_range_requests_total": "status",
                    "tapevault_signed_url_refusals_total": "reason",
                    "tapevault_legal_holds_total": "action",
                    "tapevault_store_operation_seconds_count": "operation",
                }[name]
                labels = {label: rest[0]}
            else:
                labels = {}
            found[key] = value(after, name, **labels) - value(before, name, **labels)
        return found

    # A process counts a request as its answer goes out, so the client may be a moment ahead
    # (and the purge counts after its status change is visible): scrape until the counts are
    # in, then they must be exact. (A count past the mark fails just the same.)
    last: list[Samples] = []

    def settled() -> Samples | None:
        last[:] = [scrape(server, tenant)]
        return last[0] if deltas(last[0]) == expected else None

    try:
        after = wait_for(settled, 15, "the counts of the scripted requests", 0.2)
    except AssertionError:
        assert deltas(last[0]) == expected  # shows which count differs, and by how much
        raise
    assert value(after, "tapevault_database_up") == 1
    assert value(after, "tapevault_jobs_queued") == 0
    assert ("tapevault_jobs_oldest_age_seconds", ()) in after
    # No raw path became a label: every route label is a template or "unmatched".
    routes = {dict(labels)["http_route"] for name, labels in after if name.startswith(DURATION)}
    assert all(r == "unmatched" or r.startswith("/") for r in routes)
    assert not any(session_id in r or "no/such" in r for r in routes)


def test_a_killed_process_keeps_its_counts_and_loses_its_live_gauges(
    server: Server, tenant: dict[str, str]
) -> None:
    """SIGKILL one serving process: uvicorn starts another, the counters never go down, and
    the dead one's live-gauge files are dropped at the next scrape (mark_process_dead)."""
    assert server.process is not None
    total = unmatched_after(server, tenant, 20)
    directory = server.data_dir / "metrics"
    pid = server.process.pid

    def serving() -> list[int]:  # not the helpers multiprocessing starts (resource tracker)
        return [p for p in children(pid) if (directory / f"counter_{p}.db").exists()]

    victim = serving()[0]
    assert list(directory.glob(f"gauge_livesum_{victim}.db"))
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: victim not in children(pid) and len(serving()) == 2,
        60,
        "uvicorn to replace the killed process",
        0.2,
    )
    wait_for(lambda: requests.get(f"{server.base}/healthz", timeout=5).ok, 30, "healthy", 0.2)
    after = scrape(server, tenant)
    assert requests_of(after, "unmatched", "GET", 404) == total  # nothing lost, nothing new
    assert not list(directory.glob(f"gauge_live*_{victim}.db"))
    assert list(directory.glob(f"counter_{victim}.db"))  # its counts stay in the totals
    assert value(after, "tapevault_live_streams") == 0


def test_metrics_need_an_admin_key(server: Server, tenant: dict[str, str]) -> None:
    """No key or a wrong one: 401; a member key: 403; the text names no tenant."""
    assert requests.get(f"{server.base}/metrics", timeout=10).status_code == 401
    wrong = requests.get(
        f"{server.base}/metrics", headers={"authorization": "Bearer nope"}, timeout=10
    )
    assert wrong.status_code == 401
    member = requests.post(
        f"{server.base}/v1/{tenant['workspace_id']}/api-keys",
        headers=bearer(tenant),
        json={"role": "member"},
        timeout=10,
    )
    assert member.status_code == 201, member.text
    denied = requests.get(
        f"{server.base}/metrics",
        timeout=10,
        headers={"authorization": f"Bearer {member.json()['api_key']}"},
    )
    assert denied.status_code == 403
    text = requests.get(f"{server.base}/metrics", headers=bearer(tenant), timeout=10).text
    assert tenant["partner_id"] not in text and tenant["workspace_id"] not in text


def test_the_separate_listener_serves_the_same_sums_without_a_key(
    server: Server, tenant: dict[str, str], listener_port: int
) -> None:
    """TAPEVAULT_METRICS_LISTEN: the parent's listener sums the same files; only /metrics, only
    GET and HEAD; an idle connection that never sends a request does not block it."""
    base = f"http://127.0.0.1:{listener_port}"
    with socket.create_connection(("127.0.0.1", listener_port)):  # silent: must not block
        total = unmatched_after(server, tenant, 5)
        open_ = requests.get(f"{base}/metrics", timeout=10)
    assert open_.status_code == 200
    listed = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(open_.text)
        for s in family.samples
    }
    assert requests_of(listed, "unmatched", "GET", 404) == total
    assert listed[("tapevault_database_up", ())] == 1
    assert requests.get(f"{base}/other", timeout=10).status_code == 404
    assert requests.post(f"{base}/metrics", timeout=10).status_code == 405


async def test_a_live_stream_is_counted_while_it_lasts(
    server: Server, tenant: dict[str, str]
) -> None:
    """One stream open: ``tapevault_live_streams`` 1 and its acks timed; ended: 0."""
    token = server.token(tenant["partner_id"])
    headers = {"sdp_suki_token": token}
    answer = requests.post(
        f"{server.base}/api/v1/ambient/session/create", headers=headers, timeout=10
    )
    session_id = answer.json()["ambient_session_id"]
    before = scrape(server, tenant)
    async with connect(ws_url(server, session_id), additional_headers=headers) as ws:
        sender = Sender(ws)
        for _ in range(10):
            await ws.send(bytes(640))
        await until(lambda: sender.acked == 6400, what="the stream's acks")
        during = scrape(server, tenant)
        await sender.finish()
    after = scrape(server, tenant)
    assert value(before, "tapevault_live_streams") == 0
    assert value(during, "tapevault_live_streams") == 1
    assert value(after, "tapevault_live_streams") == 0
    acks = "tapevault_stream_ack_latency_seconds_count"
    assert value(during, acks) > value(before, acks)
