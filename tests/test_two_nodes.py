"""Two nodes: two ``tapevault serve`` processes with their own data directories, one PostgreSQL
database and one bucket on moto's S3 server, serving the same tenants (README "Several nodes").

- What is created and uploaded through node A is listed, streamed (Range, byte-exact) and
  downloaded through node B, in all three dialects, and a URL either node signed plays on both.
- Node A is killed (SIGKILL) while it holds finalization jobs (its store stalls them) and live
  streams: node B finishes the jobs once their lease lapses, and never ends A's streams empty;
  A restarted finalizes its streams with every byte it acknowledged.
- A signing key removed, a Kore secret rotated, an API key revoked, a hold set and a deletion,
  made on one node (or by the CLI), take effect on the other within a second (measured).
- ``tapevault audit verify`` passes over the log both nodes wrote.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text
from websockets.asyncio.client import connect

from tapevault.audio_gen import tone_wav_bytes
from tapevault.config import Settings
from tapevault.core.access import MemoryAccessLog
from tapevault.ingest.recovery import recover_streams
from tapevault.runtime import open_runtime
from tests import support
from tests.objectstores import Outage, S3Server
from tests.server import Server, tapevault
from tests.support import wait_for

pytestmark = [
    pytest.mark.server,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

CALL = "CAfeedfacefeedfacefeedfacefeed0001"
FRAME = 640  # 20 ms of 16 kHz mono PCM16
LEASE = "2s"  # TAPEVAULT_JOB_LEASE: a dead node's jobs are taken over this long after it died
WITHIN = 1.0  # seconds: how soon a change made on one node must hold on the other


@dataclass
class Cluster:
    a: Server
    b: Server
    relay: Outage  # node A's way to the store (B's is direct): A's store can be made to stall
    env: dict[str, str]  # what both nodes share: database, bucket, credentials
    database_url: str

    def start_a(self) -> None:
        self.a.start(**self.env, TAPEVAULT_STORAGE_ENDPOINT=self.relay.endpoint)

    def sql(self, query: str, **params: object) -> list[tuple[object, ...]]:
        engine = create_engine(self.database_url)
        try:
            with engine.begin() as conn:
                return [tuple(row) for row in conn.execute(text(query), params)]
        finally:
            engine.dispose()


@pytest.fixture
def cluster(tmp_path: Path, s3_server: S3Server, database_url: str) -> Iterator[Cluster]:
    env = {
        "TAPEVAULT_DATABASE_URL": database_url,
        "TAPEVAULT_STORAGE_URL": s3_server.new_store_url(),
        **s3_server.env,
        "TAPEVAULT_JOB_LEASE": LEASE,
        "TAPEVAULT_WORKERS": "2",
        "TAPEVAULT_PURGE_INTERVAL": "1h",  # a recording past retention stays for the hold test
    }
    relay = Outage(s3_server.endpoint)
    nodes = Cluster(
        Server(tmp_path / "node-a"), Server(tmp_path / "node-b"), relay, env, database_url
    )
    try:
        nodes.start_a()
        nodes.b.start(**env)
        yield nodes
    finally:
        relay.release_heads()
        nodes.a.close()
        nodes.b.close()
        relay.down()


@dataclass
class Customer:
    partner_id: str
    workspace_id: str
    bot_id: str
    suki: dict[str, str]
    kore: dict[str, str]
    bearer: dict[str, str]


def customer(server: Server, retention: str = "7d") -> Customer:
    tenant = server.tenant(retention=retention)
    return Customer(
        partner_id=tenant["partner_id"],
        workspace_id=tenant["workspace_id"],
        bot_id=tenant["bot_id"],
        suki={"sdp_suki_token": server.token(tenant["partner_id"])},
        kore={"auth": server.token(tenant["partner_id"], "--kore")},
        bearer={"authorization": f"Bearer {tenant['api_key']}"},
    )


def pcm_of(wav_bytes: bytes) -> bytes:
    with wave.open(io.BytesIO(wav_bytes)) as w:
        return w.readframes(w.getnframes())


def upload(server: Server, who: Customer, session_id: str, wav: bytes) -> None:
    answer = requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/audio",
        headers={**who.suki, "content-type": "audio/wav"},
        data=wav,
        timeout=30,
    )
    assert answer.status_code == 202, answer.text


def end(server: Server, who: Customer, session_id: str) -> None:
    answer = requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/end", headers=who.suki, timeout=10
    )
    assert answer.status_code == 200, answer.text


def recording_urls(server: Server, who: Customer, session_id: str, download: bool = False) -> Any:
    return requests.get(
        f"{server.base}/api/v1/ambient/session/{session_id}/recording",
        params={"download": "true"} if download else None,
        headers=who.suki,
        timeout=10,
    )


def assert_serves(url: str, wav: bytes) -> None:
    """The URL serves exactly ``wav``'s samples: whole, and by ranges at its edges."""
    whole = requests.get(url, timeout=30)
    assert whole.status_code == 200, whole.text
    assert pcm_of(whole.content) == pcm_of(wav)
    size = len(whole.content)
    for first, last in ((0, 3), (44, 1043), (size - 100, size - 1)):
        part = requests.get(url, headers={"range": f"bytes={first}-{last}"}, timeout=30)
        assert part.status_code == 206, part.text
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert part.content == whole.content[first : last + 1]
    suffix = requests.get(url, headers={"range": "bytes=-10"}, timeout=30)
    assert suffix.status_code == 206 and suffix.content == whole.content[-10:]


def on(server: Server, url: str) -> str:
    """The same signed URL, asked of ``server`` (as a load balancer in front of both would)."""
    path = url.split("/media/", 1)[1]
    return f"{server.base}/media/{path}"


def test_what_node_a_took_in_node_b_lists_streams_and_downloads_in_every_dialect(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    who = customer(a)
    # Suki: a session created and uploaded to through A ...
    created = requests.post(f"{a.base}/api/v1/ambient/session/create", headers=who.suki, timeout=10)
    assert created.status_code == 201, created.text
    session_id = created.json()["ambient_session_id"]
    first, second = tone_wav_bytes(1.0, freq=300.0), tone_wav_bytes(0.5, freq=2000.0)
    upload(a, who, session_id, first)
    upload(a, who, session_id, second)
    end(a, who, session_id)
    # ... is finished (by whichever node's worker leased each job) and seen through B.
    recordings = support.wait_available(b, who.suki, session_id)
    assert [r["status"] for r in recordings] == ["available", "available"]
    for download in (False, True):
        answer = recording_urls(b, who, session_id, download)
        assert answer.status_code == 200, answer.text
        links = answer.json()["recordings"]
        assert [link["sequence_number"] for link in links] == [1, 2]
        for link, wav in zip(links, (first, second), strict=True):
            assert link["presigned_url"].startswith(f"{b.base}/media/")
            assert_serves(link["presigned_url"], wav)
            assert_serves(on(a, link["presigned_url"]), wav)  # B signed it, A serves it
    # Listed through B with the native API, by either node's answer the same.
    for node in (a, b):
        listed = requests.get(f"{node.base}/api/v1/sessions", headers=who.bearer, timeout=10)
        assert listed.status_code == 200, listed.text
        assert session_id in json.dumps(listed.json())
    # Kore: the session's merged rendition is made on demand, by either node's worker.
    kore_url = f"{b.base}/api/public/bot/{who.bot_id}/v2/recordings"
    params = {"sessionId": session_id, "userId": "agent@example.com"}

    def merged() -> dict[str, Any] | None:
        body: dict[str, Any] = requests.get(
            kore_url, params=params, headers=who.kore, timeout=10
        ).json()
        return body if body["status"] == "success" else None

    body = wait_for(merged, 60, "Kore's merged recording through B", 0.2)
    file_url = body["recording"][0]["fileUrl"]
    joined = requests.get(file_url, timeout=30)
    assert joined.status_code == 200 and pcm_of(joined.content) == pcm_of(first) + pcm_of(second)
    tail = requests.get(on(a, file_url), headers={"range": "bytes=-64"}, timeout=30)
    assert tail.status_code == 206 and tail.content == joined.content[-64:]
    # Amigo: a two-channel call uploaded through A, served and downloaded through B.
    channels = {"inbound": tone_wav_bytes(1.0, sample_rate=8000), "outbound": second}
    for channel, wav in channels.items():
        answer = requests.post(
            f"{a.base}/v1/{who.workspace_id}/calls/{CALL}/audio",
            params={"channel": channel},
            headers={**who.bearer, "content-type": "audio/wav"},
            data=wav,
            timeout=30,
        )
        assert answer.status_code == 202, answer.text

    def urls() -> dict[str, Any] | None:
        answer = requests.get(
            f"{b.base}/v1/{who.workspace_id}/recordings/{CALL}/urls", headers=who.bearer, timeout=10
        )
        ready = answer.status_code == 200 and all(
            answer.json()[f"{c}_url"] for c in ("inbound", "outbound")
        )
        return answer.json() if ready else None

    call = wait_for(urls, 60, "the call's URLs through B", 0.2)
    for channel, wav in channels.items():
        assert_serves(call[f"{channel}_url"], wav)
        download = requests.get(
            f"{b.base}/v1/{who.workspace_id}/recordings/{CALL}/download/{channel}.wav",
            headers={**who.bearer, "range": "bytes=0-3"},
            timeout=30,
        )
        assert download.status_code == 206 and download.content == b"RIFF"
    stop_both_and_verify_the_log(cluster)


def stop_both_and_verify_the_log(cluster: Cluster) -> None:
    """Stop both nodes (their last checkpoints written) and check the one access log they
    both wrote: on node A with no flag (B's key, if it signed, trusted because the database
    lists it, and said so), and with both nodes' keys pinned and B's journal compared too."""
    cluster.a.stop()
    cluster.b.stop()
    # Checkpoints are signed by the deployment's one integrator, with the key of the node that
    # held the role: one key, or both when the role moved (a node stopped or died first). Each
    # key that signed is listed, with its node.
    signed = {k for (k,) in cluster.sql("SELECT DISTINCT key_id FROM audit_checkpoints")}
    assert len(signed) in (1, 2), signed
    listed = {k: n for k, n in cluster.sql("SELECT key_id, node FROM audit_signers")}
    assert signed <= set(listed), listed
    assert set(listed.values()) <= {node_of(cluster.a), node_of(cluster.b)}, listed
    out = tapevault("audit", "verify", env=cluster.a.env)
    assert "the access log verifies" in out, out
    if len(signed) == 2:
        assert "trusted from the database only" in out, out
    out = tapevault(
        "audit",
        "verify",
        *audit_sources(cluster.a)[:2],  # A's key pinned (its journal is the local one)
        *audit_sources(cluster.b),
        env=cluster.a.env,
    )
    assert "the access log verifies" in out, out
    assert "trusted from the database only" not in out, out


def audit_sources(node: Server) -> list[str]:
    """``--public-key`` (pinned) and ``--checkpoints`` of a node, for ``audit verify``."""
    from tapevault.core.checkpoints import load_public_key_pem

    public = node.data_dir / "audit-signing.pub.pem"
    public.write_text(load_public_key_pem(node.data_dir / "audit-signing.pem"))
    journal = node.data_dir / "audit-checkpoints.log"
    # A node that never held the integrator's role signed nothing: it has no journal.
    return ["--public-key", str(public)] + (
        ["--checkpoints", str(journal)] if journal.exists() else []
    )


# --- a node killed -------------------------------------------------------------------------------


def node_of(server: Server) -> str:
    return (server.data_dir / "node-id").read_text().strip()


def new_session(server: Server, who: Customer) -> str:
    return support.new_session(server, who.suki)


async def test_a_killed_nodes_jobs_are_finished_by_the_other_and_its_streams_by_itself(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, s3_server: S3Server
) -> None:
    a, b = cluster.a, cluster.b
    who = customer(a)
    # Two live streams on A, every byte acknowledged (durable on A's disk).
    streams: list[tuple[str, bytes, support.PacedSender]] = []
    for _ in range(2):
        session_id = new_session(a, who)
        ws = await connect(support.ws_url(a, session_id), additional_headers=who.suki)
        sender = support.PacedSender(ws)
        payload = random.randbytes(FRAME * 150)
        await sender.send(payload)
        await sender.acked_all()
        streams.append((session_id, payload, sender))
    # A's store stalls every stat: its two workers lease a job each and hang in it.
    cluster.relay.hold_heads()
    uploads = new_session(a, who)
    tones = [tone_wav_bytes(0.5, freq=200.0 + 100 * i) for i in range(4)]
    for wav in tones:
        upload(a, who, uploads, wav)
    end(a, who, uploads)
    node_a = node_of(a)

    def held_by_a() -> list[tuple[object, ...]] | None:
        rows = cluster.sql(
            "SELECT job_id, attempts FROM jobs WHERE lease_owner LIKE :a AND done_ms IS NULL",
            a=f"{node_a}:%",
        )
        return rows if len(rows) == 2 else None

    held = wait_for(held_by_a, 30, "A's workers to hold two jobs")
    # Held past the lease: A renews it while the job runs, so B takes nothing from a live node.
    time.sleep(support_seconds(LEASE) * 1.5)
    assert held_by_a() == held, "B took a job A still held"
    a.kill()
    for _, _, sender in streams:
        await asyncio.wait_for(sender.reader, 10)  # A's connections died with it
    # B finishes every upload: the two A held once their leases lapsed, by the database's clock.
    recordings = support.wait_available(b, who.suki, uploads, timeout=60)
    assert [r["status"] for r in recordings] == ["available"] * 4
    for job_id, _ in held:
        (row,) = cluster.sql(
            "SELECT attempts, done_ms, last_error FROM jobs WHERE job_id = :j", j=job_id
        )
        assert row[0] == 2 and row[1] is not None and row[2] is None, row
    links = recording_urls(b, who, uploads).json()["recordings"]
    for link, wav in zip(links, tones, strict=True):
        assert_serves(link["presigned_url"], wav)
    # B, judging A's streams abandoned (their leases lapsed), takes them over: fenced, but
    # their finalization is bound to A's node, whose disk holds their spools, and B's workers
    # leave it alone instead of storing the recordings empty.
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.load(
        {
            "data_dir": str(b.data_dir),
            "database_url": cluster.database_url,
            "storage_url": cluster.env["TAPEVAULT_STORAGE_URL"],
        },
        env={},
    )
    runtime = open_runtime(settings, access_log=MemoryAccessLog(), run_migrations=False)
    try:
        me = runtime.context.process_id
        assert recover_streams(runtime.vault.ingest, me, stale_seconds=0) == 2
    finally:
        runtime.close()
    bound = cluster.sql("SELECT node FROM jobs WHERE done_ms IS NULL")
    assert bound == [(node_a,), (node_a,)], bound
    time.sleep(support_seconds(LEASE) + 1.5)  # B's workers poll every second
    assert cluster.sql("SELECT count(*) FROM jobs WHERE done_ms IS NULL") == [(2,)]
    # A restarted (its store answering again) finalizes them from its disk: every acked byte.
    cluster.relay.release_heads()
    cluster.start_a()
    for session_id, payload, sender in streams:
        (recording,) = support.wait_available(b, who.suki, session_id)
        assert recording["status"] == "available" and recording["recovered"] is True
        (link,) = recording_urls(b, who, session_id).json()["recordings"]
        stored = pcm_of(requests.get(link["presigned_url"], timeout=30).content)
        assert sender.acked <= len(stored), f"acked {sender.acked}, stored {len(stored)}"
        assert stored == payload[: len(stored)]
    stop_both_and_verify_the_log(cluster)


def support_seconds(duration: str) -> float:
    return float(duration.removesuffix("s"))


# --- changes reach the other node ----------------------------------------------------------------


def took(probe: Any, what: str) -> float:
    """Seconds until ``probe()`` is true, polled every 10 ms; fails past ``WITHIN``."""
    start = time.monotonic()
    while True:
        if probe():
            return time.monotonic() - start
        elapsed = time.monotonic() - start
        assert elapsed < WITHIN, f"{what} did not hold on the other node within {WITHIN} s"
        time.sleep(0.01)


def status(url: str, **headers: str) -> int:
    return requests.get(url, headers={"range": "bytes=0-3", **headers}, timeout=10).status_code


def test_revocations_holds_and_deletions_reach_the_other_node_within_a_second(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    who = customer(a)
    token = who.suki["sdp_suki_token"]
    kept, _ = support.make_session(a, token, seconds=1.0)
    doomed, _ = support.make_session(a, token, seconds=1.0)
    url = recording_urls(b, who, kept).json()["recordings"][0]["presigned_url"]
    doomed_url = recording_urls(b, who, doomed).json()["recordings"][0]["presigned_url"]
    figures: dict[str, float] = {}
    # A signing key rotated then removed by an operator (the CLI, one more process): URLs it
    # signed stop playing on B, whose key ring and URL caches were warm.
    assert status(url) == 206 and status(doomed_url) == 206
    old_key = tapevault("keys", "list", env=a.env).split()[0]
    tapevault("keys", "rotate", env=a.env)
    tapevault("keys", "remove", old_key, env=a.env)
    figures["signing key removed"] = took(lambda: status(url) == 403, "a removed signing key")
    url = recording_urls(b, who, kept).json()["recordings"][0]["presigned_url"]
    doomed_url = recording_urls(b, who, doomed).json()["recordings"][0]["presigned_url"]
    assert status(url) == 206 and status(doomed_url) == 206  # signed with the new key
    # A Kore client secret rotated: B's verified-token cache forgets the old token.
    kore = f"{b.base}/api/public/bot/{who.bot_id}/v2/recordings"
    params = {"sessionId": kept, "userId": "agent@example.com"}
    assert requests.get(kore, params=params, headers=who.kore, timeout=10).status_code == 200
    tapevault("tenant", "rotate-kore-secret", "--tenant", who.partner_id, env=a.env)
    figures["Kore secret rotated"] = took(
        lambda: requests.get(kore, params=params, headers=who.kore, timeout=10).status_code == 401,
        "a rotated Kore secret",
    )
    # An API key revoked through A's API fails on B.
    created = requests.post(
        f"{a.base}/v1/{who.workspace_id}/api-keys",
        headers=who.bearer,
        json={"name": "nightly export", "role": "member"},
        timeout=10,
    ).json()
    member = {"authorization": f"Bearer {created['api_key']}"}
    sessions = f"{b.base}/api/v1/sessions"
    assert requests.get(sessions, headers=member, timeout=10).status_code == 200
    revoked = requests.delete(
        f"{a.base}/v1/{who.workspace_id}/api-keys/{created['id']}", headers=who.bearer, timeout=10
    )
    assert revoked.status_code == 204
    figures["API key revoked"] = took(
        lambda: requests.get(sessions, headers=member, timeout=10).status_code == 401,
        "a revoked API key",
    )
    # A deletion through A: B's cached recording stops being served.
    deleted = requests.delete(f"{a.base}/api/v1/sessions/{doomed}", headers=who.bearer, timeout=10)
    assert deleted.status_code == 200, deleted.text
    figures["session deleted"] = took(lambda: status(doomed_url) == 410, "a deletion")
    # A hold set through A: a session past its retention, that B has just refused (410) and
    # cached as settled, is served again by B.
    short = customer(a, retention="2s")
    expiring, _ = support.make_session(a, short.suki["sdp_suki_token"], seconds=1.0)
    wait_for(
        lambda: recording_urls(b, short, expiring).status_code == 410,
        10,
        "the recording to pass its retention",
        0.1,
    )
    held = requests.put(
        f"{a.base}/api/v1/sessions/{expiring}/hold",
        headers=short.bearer,
        json={"reason": "litigation 2026-17", "by": "counsel"},
        timeout=10,
    )
    assert held.status_code == 200, held.text
    figures["hold set"] = took(
        lambda: recording_urls(b, short, expiring).status_code == 200, "a legal hold"
    )
    print("changes seen on the other node after (s):", json.dumps(figures))
    stop_both_and_verify_the_log(cluster)
