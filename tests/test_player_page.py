"""The player page in a real browser (Debian's Chromium through Playwright): it plays a
two-segment session as one timeline, seeks where the waveform is clicked, works from the
keyboard, renews its short media URLs and resumes in place when one fails, and words a revoked
or expired link. A screenshot of it is kept in the test's directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tapevault.audio_gen import tone_wav_bytes
from tests.conftest import need
from tests.server import Server
from tests.support import CHROMIUM, CHROMIUM_FLAGS, new_session, wait_available, wait_for

pytestmark = pytest.mark.server
STATE = "window.tapevaultPlayer.state()"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    # Media URLs of 4 s: the page must renew them several times a test.
    srv = Server(tmp_path / "data").start(TAPEVAULT_PLAYER_MEDIA_SECONDS="4")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    need(Path(CHROMIUM).is_file(), "chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a test dependency
        need(False, "playwright is not installed")
        raise
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def two_segments(server: Server, seconds: float) -> tuple[dict[str, str], str]:
    """A tenant's API-key header and an ended session of two tones of ``seconds`` each."""
    tenant = server.tenant()
    suki = {"sdp_suki_token": server.token(tenant["partner_id"])}
    session_id = new_session(server, suki)
    for _ in range(2):
        up = requests.post(
            f"{server.base}/api/v1/ambient/session/{session_id}/audio",
            headers={**suki, "content-type": "audio/wav"},
            data=tone_wav_bytes(seconds),
            timeout=30,
        )
        assert up.status_code == 202, up.text
    requests.post(
        f"{server.base}/api/v1/ambient/session/{session_id}/end", headers=suki, timeout=10
    )
    wait_available(server, suki, session_id)
    return {"authorization": f"Bearer {tenant['api_key']}"}, session_id


def player_link(
    server: Server, bearer: dict[str, str], session_id: str, **body: str
) -> dict[str, Any]:
    made = requests.post(
        f"{server.base}/api/v1/sessions/{session_id}/player-links",
        headers=bearer,
        json=body or None,
        timeout=10,
    )
    assert made.status_code == 201, made.text
    link: dict[str, Any] = made.json()
    return link


def until(page: Any, condition: str, timeout: float = 20) -> None:
    """Poll a JavaScript condition from outside the page (the page's CSP forbids the eval
    that ``wait_for_function`` would run inside it)."""
    wait_for(lambda: page.evaluate(f"() => Boolean({condition})") or None, timeout, condition)


def opened(browser: Any, url: str) -> Any:
    """A new page on ``url``, once its controls show."""
    page = browser.new_page(viewport={"width": 960, "height": 420})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors too, except the browser's own favicon request (404: there is none).
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and "Failed to load resource" not in m.text
            else None
        ),
    )
    # A failed request of the page's own (not media: a new source aborts the old one's reads).
    page.on("requestfailed", lambda r: errors.append(r.url) if "/player/" in r.url else None)
    page.errors = errors
    page.goto(url)
    return page


def test_the_page_plays_two_segments_seeks_on_click_and_obeys_the_keyboard(
    server: Server, browser: Any, tmp_path: Path
) -> None:
    """Space plays; a click at 75 % of the waveform lands at 75 % of the timeline (in the second
    segment); ← and → move 5 s; the speed menu sets the rate; playing on from the end of the
    first segment goes into the second; space pauses. A screenshot is kept."""
    bearer, session_id = two_segments(server, 6.0)
    link = player_link(server, bearer, session_id)
    page = opened(browser, link["url"])
    page.wait_for_selector("#controls:not([hidden])", timeout=20_000)
    assert page.inner_text("#total") == "0:12"
    assert page.get_attribute("#play", "aria-label") == "Play"
    page.keyboard.press("Space")
    until(page, f"{STATE}.position > 0.5 && !{STATE}.paused", 20)
    assert page.get_attribute("#play", "aria-label") == "Pause"
    box = page.locator("#wave").bounding_box()
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + box["height"] / 2)
    landed = page.evaluate(f"{STATE}.position")
    assert 8.9 <= landed <= 9.2, landed
    until(page, f"{STATE}.index === 1 && {STATE}.position > 9.1", 20)
    assert "segment 2 of 2" in page.inner_text("#segment")
    page.locator("#wave").focus()
    before = page.evaluate(f"{STATE}.position")
    page.keyboard.press("ArrowLeft")
    after = page.evaluate(f"{STATE}.position")
    assert abs((before - 5) - after) < 0.3, (before, after)
    until(page, f"{STATE}.index === 0", 5)
    page.keyboard.press("ArrowRight")
    assert abs(page.evaluate(f"{STATE}.position") - before) < 0.5
    page.select_option("#speed", "2")
    assert page.evaluate("document.getElementById('audio').playbackRate") == 2
    # From just before the end of segment 1, playback carries on into segment 2.
    page.evaluate("window.tapevaultPlayer.seek(5.2)")
    until(page, f"{STATE}.index === 1 && {STATE}.position > 6.3", 20)
    page.locator("#play").focus()
    page.keyboard.press("Enter")  # the button, by keyboard: pause
    until(page, f"{STATE}.paused && !{STATE}.playing", 5)
    # Paused past the URLs' expiry: nothing is fetched until it plays again, then it renews.
    renewals = page.evaluate("window.tapevaultPlayer.renewals")
    until(page, f"{STATE}.stale", 20)
    assert page.evaluate("window.tapevaultPlayer.renewals") == renewals
    paused_at = page.evaluate(f"{STATE}.position")
    page.keyboard.press("Enter")
    until(page, f"window.tapevaultPlayer.renewals === {renewals + 1}", 20)
    until(page, f"!{STATE}.paused && {STATE}.position > {paused_at + 0.3}", 20)
    page.keyboard.press("Enter")
    until(page, f"{STATE}.paused", 5)
    shot = tmp_path / "player.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 1000
    assert page.errors == []


def test_it_plays_on_across_expiring_urls_and_a_refused_one_resuming_in_place(
    server: Server, browser: Any
) -> None:
    """With media URLs of 4 s the page renews them over and over while it plays, and when a
    media request is refused (403) it fetches the playlist again itself: each time the new
    source resumes within 0.5 s of where the old one was, and playback keeps advancing."""
    bearer, session_id = two_segments(server, 20.0)
    link = player_link(server, bearer, session_id)
    page = opened(browser, link["url"])
    refused: list[str] = []

    def media(route: Any) -> None:
        # Refuse the first media request after three renewals, as an expired URL would be.
        if not refused and page.evaluate("window.tapevaultPlayer.renewals") >= 3:
            refused.append(route.request.url)
            route.fulfill(status=403, body='{"error": "url_expired"}')
        else:
            route.continue_()

    page.wait_for_selector("#controls:not([hidden])", timeout=20_000)
    page.route("**/media/**", media)
    page.keyboard.press("Space")
    until(
        page,
        "window.tapevaultPlayer.renewals >= 4 && window.tapevaultPlayer.errors >= 1"
        " && window.tapevaultPlayer.resumes.every(r => r.landed !== null)",
        60,
    )
    record = page.evaluate("window.tapevaultPlayer")
    resumes = record["resumes"]
    assert refused and any(r["reason"] == "error" for r in resumes)
    for resume in resumes:
        assert abs(resume["landed"] - resume["from"]) < 0.5, resume
    until(page, f"{STATE}.position > {resumes[-1]['landed'] + 0.5}", 20)
    assert page.evaluate(f"{STATE}.playing")


def test_a_revoked_or_expired_link_shows_its_message(server: Server, browser: Any) -> None:
    """Revoked: "revoked"; past its ttl: "has expired — ask for a new one"; no controls."""
    bearer, session_id = two_segments(server, 1.0)
    revoked = player_link(server, bearer, session_id)
    gone = requests.delete(
        f"{server.base}/api/v1/player-links/{revoked['link_id']}", headers=bearer, timeout=10
    )
    assert gone.status_code == 200
    page = opened(browser, revoked["url"])
    page.wait_for_selector("#message:not([hidden])", timeout=20_000)
    assert "revoked" in page.inner_text("#message")
    assert page.is_hidden("#controls")
    short = player_link(server, bearer, session_id, ttl="1s")
    secret = short["url"].split("#k=")[1]
    wait_for(
        lambda: (
            requests.get(
                f"{server.base}/player/{short['link_id']}/playlist",
                headers={"x-player-key": secret},
                timeout=10,
            ).status_code
            == 410
        ),
        10,
        "the 1 s link to expire",
        0.2,
    )
    page = opened(browser, short["url"])
    page.wait_for_selector("#message:not([hidden])", timeout=20_000)
    assert page.inner_text("#message") == "This player link has expired — ask for a new one."
    assert page.is_hidden("#controls")


def test_the_waveform_is_drawn_from_peaks_and_is_a_flat_line_without(
    server: Server, browser: Any
) -> None:
    """The server's own peaks of two tones are drawn tall all along; a track whose peaks
    (BBC audiowaveform JSON) are loud in the first half and silent in the second is drawn tall
    where it is loud and flat where it is silent; without peaks the whole waveform is the flat
    line. (The last two stand in for the playlist and the peaks through request routing.)"""
    bearer, session_id = two_segments(server, 2.0)
    link = player_link(server, bearer, session_id)
    columns = "() => { const c = document.getElementById('wave'); const g = c.getContext('2d');"
    heights = (
        columns + " return [0.2, 0.4, 0.6, 0.8].map(f => { const x = Math.floor(f * c.width);"
        " const d = g.getImageData(x, 0, 1, c.height).data; let n = 0;"
        " for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n += 1; return n; }); }"
    )
    page = opened(browser, link["url"])
    page.wait_for_selector("#controls:not([hidden])", timeout=20_000)
    wait_for(lambda: min(page.evaluate(heights)) > 10 or None, 10, "the tones' peaks drawn")
    page.close()

    def without_peaks(route: Any) -> None:
        answer = route.fetch()
        body = answer.json()
        for track in body["tracks"]:
            track["peaks_url"] = None
        route.fulfill(response=answer, json=body)

    page = browser.new_page(viewport={"width": 960, "height": 420})
    page.route("**/playlist", without_peaks)
    page.goto(link["url"])
    page.wait_for_selector("#controls:not([hidden])", timeout=20_000)
    assert all(h <= 3 for h in page.evaluate(heights)), page.evaluate(heights)
    page.close()

    def with_peaks(route: Any) -> None:
        answer = route.fetch()
        body = answer.json()
        for track in body["tracks"]:
            track["peaks_url"] = f"/media/{track['recording_id']}.peaks.json"
        route.fulfill(response=answer, json=body)

    loud_then_silent = {
        "version": 2,
        "channels": 1,
        "sample_rate": 16000,
        "samples_per_pixel": 320,
        "bits": 8,
        "length": 100,
        "data": [-120, 120] * 50 + [0, 0] * 50,
    }
    page = browser.new_page(viewport={"width": 960, "height": 420})
    page.route("**/playlist", with_peaks)
    page.route("**/*.peaks.json", lambda route: route.fulfill(json=loud_then_silent))
    page.goto(link["url"])
    page.wait_for_selector("#controls:not([hidden])", timeout=20_000)
    until(page, "window.tapevaultPlayer && document.getElementById('wave')", 5)
    wait_for(lambda: page.evaluate(heights)[0] > 60 or None, 10, "the peaks to be drawn")
    # Each of the two segments is loud in its first half and silent in its second.
    first_loud, first_silent, second_loud, second_silent = page.evaluate(heights)
    assert first_loud > 60 and second_loud > 60
    assert first_silent <= 3 and second_silent <= 3
