"""A real browser: Debian's Chromium, driven by Playwright, plays a recording through its signed
URL with an <audio> element, seeks, and the access log holds exactly one playback record for it,
with the ranges Chromium asked for and the bytes it got."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import need
from tests.server import Server
from tests.support import CHROMIUM, CHROMIUM_FLAGS, make_session

pytestmark = pytest.mark.server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data").start(TAPEVAULT_PLAYBACK_IDLE="2s")
    try:
        yield srv
    finally:
        srv.stop()


def test_chromium_playback_is_one_record(server: Server) -> None:
    """Play, seek far ahead, play again: Chromium sends several Range requests (it reads the
    start, then jumps to the seek position), and they are one media.playback record whose
    ranges cover both places."""
    need(Path(CHROMIUM).is_file(), "chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a test dependency
        need(False, "playwright is not installed")
        raise
    tenant = server.tenant()
    token = server.token(tenant["partner_id"])
    session_id, wav = make_session(server, token, seconds=600.0)  # 19 MB: read in ranges
    urls = requests.get(
        f"{server.base}/api/v1/ambient/session/{session_id}/recording",
        headers={"sdp_suki_token": token},
        timeout=10,
    ).json()
    url = urls["recordings"][0]["presigned_url"]
    recording_id = urls["recordings"][0]["recording_id"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.set_content(f'<audio id="a" src="{url}" preload="auto"></audio>')
        page.evaluate("() => document.getElementById('a').play()")
        page.wait_for_function("document.getElementById('a').currentTime > 1.5", timeout=20_000)
        page.evaluate("() => { const a = document.getElementById('a'); a.currentTime = 500; }")
        page.wait_for_function("document.getElementById('a').currentTime > 501", timeout=20_000)
        user_agent = page.evaluate("() => navigator.userAgent")
        page.evaluate("() => document.getElementById('a').pause()")
        browser.close()
    bearer = {"authorization": f"Bearer {tenant['api_key']}"}
    playbacks: list[dict[str, object]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # idle 2 s, then the writer's next tick seals it
        history = requests.get(
            f"{server.base}/api/v1/recordings/{recording_id}/access", headers=bearer, timeout=10
        ).json()
        playbacks = [r for r in history["records"] if r["action"] == "media.playback"]
        if playbacks:
            break
        time.sleep(0.5)
    assert len(playbacks) == 1, playbacks
    (playback,) = playbacks
    assert playback["user_agent"] == user_agent and "Chrome" in user_agent
    assert playback["actor"]["kind"] == "signed_url"  # type: ignore[index]
    detail = playback["detail"]
    assert isinstance(detail, dict) and detail["requests"] >= 2
    size = len(wav)
    ranges = playback["ranges"]
    assert isinstance(ranges, list) and ranges and all(0 <= a <= b < size for a, b in ranges)
    # Folded, sorted and disjoint: the union of what the requests sent.
    assert all(b1 + 1 < a2 for (_, b1), (a2, _) in itertools.pairwise(ranges))
    assert ranges[0][0] == 0  # the start (and the header) was read
    seek_at = 44 + 500 * 32000  # 16 kHz mono 16-bit after a 44-byte header
    assert any(a <= seek_at and seek_at + 32000 <= b for a, b in ranges)  # and the 500 s mark
    # How far Chromium buffers before the seek is its choice: usually it stops early and the
    # ranges are two, but on a busy machine it may have read the whole file by then. Either way
    # each byte sent is counted each time it was sent, so overlapping reads count twice.
    sent = playback["bytes_sent"]
    assert isinstance(sent, int) and sent >= sum(b - a + 1 for a, b in ranges)
    assert set(detail["statuses"]) <= {"200", "206"}
