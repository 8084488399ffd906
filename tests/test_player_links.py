"""Player links over the API, in process: made with a workspace key or a Suki token, listed,
revoked, opened only with their secret, expiring with the clock and never past the audio's
retention; the playlist is the session's timeline of short media URLs, each issued and read
in the link's name."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tapevault.audio_gen import tone_wav_bytes
from tapevault.core.access import Action, MemoryAccessLog
from tapevault.core.clock import FixedClock
from tapevault.core.playerlinks import hash_secret
from tapevault.runtime import Runtime
from tests.dialects import Customer, customer, local, upload_channel

CALL = "CA" + "d" * 32


@pytest.fixture
def who(runtime: Runtime, clock: FixedClock) -> Customer:
    return customer(runtime, clock)


async def ambient(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, seconds: tuple[float, ...]
) -> str:
    """An ended ambient session with one uploaded tone per entry of ``seconds``, processed."""
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    session_id: str = created.json()["ambient_session_id"]
    for length in seconds:
        up = await client.post(
            f"/api/v1/ambient/session/{session_id}/audio",
            headers={**who.suki, "content-type": "audio/wav"},
            content=tone_wav_bytes(length),
        )
        assert up.status_code == 202, up.text
    await client.post(f"/api/v1/ambient/session/{session_id}/end", headers=who.suki)
    runtime.worker.run_until_idle()
    return session_id


async def new_link(
    client: httpx.AsyncClient, who: Customer, session_id: str, **body: Any
) -> dict[str, Any]:
    made = await client.post(
        f"/api/v1/sessions/{session_id}/player-links", headers=who.bearer, json=body or None
    )
    assert made.status_code == 201, made.text
    link: dict[str, Any] = made.json()
    return link


def secret_of(link: dict[str, Any]) -> str:
    return urlsplit(link["url"]).fragment.removeprefix("k=")


async def playlist(
    client: httpx.AsyncClient, link: dict[str, Any], secret: str | None = None
) -> httpx.Response:
    """The link's playlist, with its own secret unless ``secret`` is given."""
    return await client.get(
        f"/player/{link['link_id']}/playlist",
        headers={"x-player-key": secret if secret is not None else secret_of(link)},
    )


async def test_a_link_plays_the_segments_in_order_with_short_urls_in_its_name(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, access_log: MemoryAccessLog
) -> None:
    """Two segments: one timeline (the second starts where the first ends), each URL valid a few
    minutes, marked with the link, and its issue and its read logged as the link's."""
    session_id = await ambient(client, runtime, who, (1.0, 2.0))
    link = await new_link(client, who, session_id)
    assert link["url"].startswith("https://vault.test/player/")
    assert "#k=tvp_" in link["url"] and link["session_id"] == session_id
    got = await playlist(client, link)
    assert got.status_code == 200, got.text
    assert got.headers["referrer-policy"] == "no-referrer"
    body = got.json()
    tracks = body["tracks"]
    assert [t["sequence_number"] for t in tracks] == [1, 2]
    assert [t["offset_ms"] for t in tracks] == [0, tracks[0]["duration_ms"]]
    assert body["duration_ms"] == sum(t["duration_ms"] for t in tracks) == 3000
    for track in tracks:  # each with its waveform peaks, readable through their own URL
        peaks_url = urlsplit(track["peaks_url"])
        assert peaks_url.path == f"/media/{track['recording_id']}.peaks.json"
        peaks = await client.get(f"{peaks_url.path}?{peaks_url.query}")
        assert peaks.status_code == 200, peaks.text
        assert peaks.json()["version"] == 2 and peaks.json()["length"] > 0
    now = int(runtime.vault.clock.now())
    assert all(t["expires_at"] == now + 300 for t in tracks)
    query = parse_qs(urlsplit(tracks[0]["url"]).query)
    assert query["l"] == [link["link_id"]]
    issued = [e for e in access_log.events if e.action is Action.PLAYER_PLAYLIST]
    assert len(issued) == 1 and issued[0].status == 200
    assert issued[0].actor.kind == "player_link" and issued[0].actor.token_id == link["link_id"]
    assert issued[0].session_id == session_id
    media = await client.get(local(tracks[1]["url"]), headers={"range": "bytes=0-99"})
    assert media.status_code == 206
    read = [e for e in access_log.events if e.action is Action.MEDIA_PLAYBACK]
    assert read and read[-1].actor.kind == "player_link"
    assert read[-1].actor.token_id == link["link_id"]


async def test_the_secret_is_stored_hashed_and_a_wrong_one_is_like_no_link(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer
) -> None:
    """The database holds the secret's SHA-256 only; a wrong secret, a missing one and an
    unknown link id all answer the same 404."""
    session_id = await ambient(client, runtime, who, (0.5,))
    link = await new_link(client, who, session_id)
    stored = runtime.repo.get_player_link(link["link_id"])
    assert stored is not None and stored.secret_hash == hash_secret(secret_of(link))
    assert secret_of(link) not in repr(stored)
    wrong = await playlist(client, link, "tvp_" + "A" * 43)
    missing = await playlist(client, link, "")
    unknown = await playlist(client, {"link_id": "0123456789abcdef"}, secret_of(link))
    assert wrong.status_code == missing.status_code == unknown.status_code == 404
    assert wrong.json() == missing.json() == unknown.json()
    huge = await playlist(client, link, "x" * 5000)
    assert huge.status_code in (404, 431)


async def test_expired_and_revoked_links_answer_410_with_their_reason(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, clock: FixedClock
) -> None:
    """A link past its ttl says "expired" in words the page shows; a revoked one "revoked";
    revoking is listed, and another tenant cannot revoke it (404, like an unknown id)."""
    session_id = await ambient(client, runtime, who, (0.5,))
    short = await new_link(client, who, session_id, ttl="1m")
    kept = await new_link(client, who, session_id)
    other = customer(runtime, clock, "other")
    foreign = await client.delete(f"/api/v1/player-links/{kept['link_id']}", headers=other.bearer)
    nobody = await client.delete("/api/v1/player-links/0123456789abcdef", headers=other.bearer)
    assert foreign.status_code == nobody.status_code == 404
    assert foreign.json() == nobody.json()
    revoked = await client.delete(f"/api/v1/player-links/{kept['link_id']}", headers=who.bearer)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    gone = await playlist(client, kept)
    assert gone.status_code == 410 and gone.json()["reason"] == "revoked"
    assert (await playlist(client, short)).status_code == 200
    clock.advance(61)
    expired = await playlist(client, short)
    assert expired.status_code == 410
    assert expired.json()["reason"] == "expired"
    assert expired.json()["message"] == "This player link has expired — ask for a new one."
    listed = await client.get(f"/api/v1/sessions/{session_id}/player-links", headers=who.bearer)
    assert listed.status_code == 200
    states = {k["link_id"]: k["revoked_at"] for k in listed.json()["links"]}
    assert set(states) == {short["link_id"], kept["link_id"]}
    assert states[kept["link_id"]] is not None and states[short["link_id"]] is None
    assert all("url" not in k for k in listed.json()["links"])  # the secret is shown once


async def test_ttl_is_bounded_and_capped_at_retention_unless_held(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, clock: FixedClock
) -> None:
    """ttl above 7 d or malformed is a 400 naming it; a link never outlives the audio's
    retention (7 days here), except under a legal hold."""
    session_id = await ambient(client, runtime, who, (0.5,))
    for bad in ({"ttl": "8d"}, {"ttl": "soon"}, {"ttl": 5}, {"other": 1}):
        refused = await client.post(
            f"/api/v1/sessions/{session_id}/player-links", headers=who.bearer, json=bad
        )
        assert refused.status_code == 400, (bad, refused.text)
    not_json = await client.post(
        f"/api/v1/sessions/{session_id}/player-links", headers=who.bearer, content=b"{"
    )
    assert not_json.status_code == 400
    clock.advance(6 * 86400)
    capped = await new_link(client, who, session_id, ttl="7d")
    (recording,) = runtime.repo.list_recordings(who.tenant.partner_id, session_id)
    stored = runtime.repo.get_player_link(capped["link_id"])
    assert stored is not None and stored.expires_ms == recording.expires_ms
    held = await client.put(
        f"/api/v1/sessions/{session_id}/hold", headers=who.bearer, json={"reason": "audit"}
    )
    assert held.status_code == 200
    longer = await new_link(client, who, session_id, ttl="7d")
    stored = runtime.repo.get_player_link(longer["link_id"])
    assert stored is not None and stored.expires_ms > recording.expires_ms


async def test_suki_credentials_get_a_link_and_a_call_plays_its_merged_file(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer
) -> None:
    """GET .../player with a Suki token answers 200 and the link JSON; a two-channel call's playlist
    is its merged rendition, one track at offset 0."""
    session_id = await ambient(client, runtime, who, (0.5,))
    got = await client.get(f"/api/v1/ambient/session/{session_id}/player", headers=who.suki)
    assert got.status_code == 200, got.text
    assert set(got.json()) >= {"link_id", "url", "expires_at"}
    assert (await playlist(client, got.json())).status_code == 200
    for channel in ("inbound", "outbound"):
        await upload_channel(client, runtime, who, CALL, channel, tone_wav_bytes(0.5))
    runtime.worker.run_until_idle()
    link = await new_link(client, who, CALL)
    got = await playlist(client, link)
    assert got.status_code == 200, got.text
    body = got.json()
    assert [(t["channel"], t["offset_ms"]) for t in body["tracks"]] == [("merged", 0)]
    assert body["kind"] == "call"


async def test_a_link_to_a_session_without_audio_yet_says_retry(
    client: httpx.AsyncClient, who: Customer
) -> None:
    """An open session with nothing uploaded: 404 with Retry-After, the page's "not ready"."""
    created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
    link = await new_link(client, who, created.json()["ambient_session_id"])
    waiting = await playlist(client, link)
    assert waiting.status_code == 404 and "retry-after" in waiting.headers


async def test_the_page_and_its_files_forbid_everything_but_this_server(
    client: httpx.AsyncClient,
) -> None:
    """The page, script and stylesheet are served with a CSP of 'self' only, no inline script,
    no referrer; the page loads only its own script; a malformed link id is a 404."""
    page = await client.get("/player/0123456789abcdef")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    assert '<script src="/player/static/player.js"' in page.text
    assert "<script>" not in page.text and "http" not in page.text.replace("http-equiv", "")
    script = await client.get("/player/static/player.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert (await client.get("/player/static/player.css")).status_code == 200
    assert (await client.get("/player/not-a-link")).status_code == 404
    assert (await client.post("/player/0123456789abcdef")).status_code == 405


async def test_revoking_a_link_stops_the_media_urls_it_issued_at_once(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer, access_log: MemoryAccessLog
) -> None:
    """A URL issued through a link, audio or waveform peaks, plays until the link is revoked
    (its reads logged as the link's), then answers 403 url_revoked (not minutes later when it
    would expire); the page then learns "revoked"."""
    session_id = await ambient(client, runtime, who, (0.5,))
    link = await new_link(client, who, session_id)
    track = (await playlist(client, link)).json()["tracks"][0]
    url, peaks = local(track["url"]), local(track["peaks_url"])
    assert (await client.get(url, headers={"range": "bytes=0-9"})).status_code == 206
    assert (await client.get(peaks)).status_code == 200
    read = [e for e in access_log.events if e.action is Action.MEDIA_PEAKS]
    assert read and read[-1].actor.kind == "player_link"
    assert read[-1].actor.token_id == link["link_id"]
    await client.delete(f"/api/v1/player-links/{link['link_id']}", headers=who.bearer)
    for revoked in (url, peaks):
        refused = await client.get(revoked, headers={"range": "bytes=0-9"})
        assert refused.status_code == 403 and refused.json()["error"] == "url_revoked", revoked


async def test_malformed_link_ids_and_secrets_are_a_404_never_a_500(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer
) -> None:
    """NUL, overlong, non-hex ids (the database never sees them) and a secret with NUL answer
    the same 404 as an unknown link."""
    session_id = await ambient(client, runtime, who, (0.5,))
    link = await new_link(client, who, session_id)
    for bad in ("a%00b", "A" * 16, "0" * 200, "..", "%2e%2e"):
        got = await playlist(client, {"link_id": bad}, secret_of(link))
        assert got.status_code == 404, (bad, got.text)
    got = await playlist(client, link, "tvp_\x00")
    assert got.status_code == 404


async def test_a_deleted_session_gets_no_link(
    client: httpx.AsyncClient, runtime: Runtime, who: Customer
) -> None:
    """A link to a session whose audio was deleted is refused with 409 (it could only ever
    show "deleted"), through the native API and Suki's route alike."""
    session_id = await ambient(client, runtime, who, (0.5,))
    deleted = await client.delete(f"/api/v1/sessions/{session_id}", headers=who.bearer)
    assert deleted.status_code == 200, deleted.text
    native = await client.post(f"/api/v1/sessions/{session_id}/player-links", headers=who.bearer)
    assert native.status_code == 409 and "deleted" in native.json()["message"], native.text
    suki = await client.get(f"/api/v1/ambient/session/{session_id}/player", headers=who.suki)
    assert suki.status_code == 409, suki.text
