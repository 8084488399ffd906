"""Responses handed to nginx (core/handoff.py) and nginx's delivery log (deliverylog.py) on their
own: what counts while nginx sends, what its report replaces, what a lost report leaves, and the
log reader's handling of garbled lines, other processes' lines, rotation and truncation."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, cast

import pytest

from tapevault.config import Settings
from tapevault.core.access import AccessEvent, Action, Actor, MemoryAccessLog
from tapevault.core.auditlog import AuditLog, Pending
from tapevault.core.clock import FixedClock
from tapevault.core.handoff import Handoffs, Report, sent_ranges
from tapevault.core.playback import PerRequest, Playbacks
from tapevault.deliverylog import DeliveryLog, parse_line
from tapevault.errors import ConfigError
from tapevault.http.ranged import Representation
from tapevault.http.xaccel import cached_until, handoff_range


class InstantAudit:
    """An audit log whose pending writes are durable at once."""

    def __init__(self) -> None:
        self.folder: Any = None
        self.healthy = True
        self.opened: list[Pending] = []

    async def open_pending(self, pending: Pending) -> None:
        self.opened.append(pending)


def first_request() -> AccessEvent:
    actor = Actor(partner_id="p", kind="signed_url", client_ip="10.0.0.1", user_agent="Chrome")
    return AccessEvent(Action.MEDIA_PLAYBACK, actor, 206, 0, recording_id="r1")


def playback() -> tuple[Playbacks, str]:
    playbacks = Playbacks(cast(AuditLog, InstantAudit()), FixedClock(1_000.0), "process-1")
    playback_id = asyncio.run(playbacks.admit("player", first_request))
    return playbacks, playback_id


def seal(playbacks: Playbacks) -> dict[str, Any]:
    _updated, done = playbacks.due(10**12, final=True)
    assert len(done) == 1
    entry = done[0][1]
    return {"ranges": list(entry.ranges), "bytes": entry.bytes_sent, "detail": entry.detail}


def test_sent_ranges_follow_what_nginx_reports() -> None:
    """A 206's bytes start at its Content-Range; a 200's at 0; a cut response counts what was
    sent; an error page or a garbled range counts no range."""
    assert sent_ranges(Report("d", 206, 100, "bytes 500-599/1000")) == [(500, 599)]
    assert sent_ranges(Report("d", 206, 40, "bytes 500-599/1000")) == [(500, 539)]
    assert sent_ranges(Report("d", 200, 1000, None)) == [(0, 999)]
    assert sent_ranges(Report("d", 200, 0, None)) == []
    assert sent_ranges(Report("d", 404, 153, None)) == []
    assert sent_ranges(Report("d", 206, 10, "bytes x-y/z")) == []


def test_a_handed_off_response_counts_as_authorised_until_reported() -> None:
    """While nginx sends, the playback's pending record counts the authorised range (in
    flight) and the playback is not idle; nginx's report replaces it by what was sent."""
    playbacks, playback_id = playback()
    metered: list[int] = []
    handoffs = Handoffs(playbacks, on_sent=metered.append)
    delivery = handoffs.hand_off(playback_id, 206, 1000, 500, now_ms=0)
    assert delivery is not None and handoffs.owns(delivery)
    updated, done = playbacks.due(10**12, final=False)
    assert done == []  # nginx is still sending: not idle, whatever the clock says
    (pending,) = updated
    assert pending.entry.ranges == ((1000, 1499),) and pending.entry.bytes_sent == 500
    assert pending.entry.detail is not None and pending.entry.detail["in_flight"] == 1
    # The client left after 120 bytes.
    assert handoffs.report(Report(delivery, 206, 120, "bytes 1000-1499/9000"))
    assert not handoffs.report(Report(delivery, 206, 120, "bytes 1000-1499/9000"))  # once
    record = seal(playbacks)
    assert record["ranges"] == [(1000, 1119)] and record["bytes"] == 120
    assert record["detail"]["requests"] == 1 and "in_flight" not in record["detail"]
    assert handoffs.mismatches == 0
    assert metered == [120]  # the bytes metric counts what nginx sent


def test_an_unreported_response_counts_as_authorised_and_unconfirmed() -> None:
    """A response nginx never reported (killed, line lost) counts its authorised range after
    the timeout, marked unconfirmed: the record over-states, never under-states."""
    playbacks, playback_id = playback()
    handoffs = Handoffs(playbacks, timeout_ms=1000)
    delivery = handoffs.hand_off(playback_id, 206, 0, 65536, now_ms=0)
    assert delivery is not None
    assert handoffs.expire(999) == 0
    assert handoffs.expire(1000) == 1
    assert not handoffs.report(Report(delivery, 206, 10, "bytes 0-65535/70000"))  # too late
    record = seal(playbacks)
    assert record["ranges"] == [(0, 65535)] and record["bytes"] == 65536
    assert record["detail"]["unconfirmed"] == 1


def test_a_cancelled_hand_off_counts_nothing() -> None:
    """An answer that never reached nginx sent nothing and ends the response."""
    playbacks, playback_id = playback()
    handoffs = Handoffs(playbacks)
    delivery = handoffs.hand_off(playback_id, 200, 0, 1000, now_ms=0)
    assert delivery is not None
    handoffs.cancel(delivery)
    assert handoffs.in_flight == 0
    record = seal(playbacks)
    assert record["ranges"] == [] and record["bytes"] == 0


def test_hand_offs_are_bounded() -> None:
    """Past ``max_open`` responses in flight nothing more is handed off (tapevault sends it)."""
    playbacks, playback_id = playback()
    handoffs = Handoffs(playbacks, max_open=2)
    assert handoffs.hand_off(playback_id, 206, 0, 1, now_ms=0) is not None
    assert handoffs.hand_off(playback_id, 206, 0, 1, now_ms=0) is not None
    assert handoffs.hand_off(playback_id, 206, 0, 1, now_ms=0) is None


def test_a_report_that_contradicts_the_authorisation_is_recorded_as_sent() -> None:
    """If nginx answered otherwise than tapevault decided (a site changed by hand), the record
    holds what nginx says it sent, and the mismatch is counted."""
    playbacks, playback_id = playback()
    handoffs = Handoffs(playbacks)
    delivery = handoffs.hand_off(playback_id, 206, 100, 10, now_ms=0)
    assert delivery is not None
    handoffs.report(Report(delivery, 200, 5000, None))
    assert handoffs.mismatches == 1
    record = seal(playbacks)
    assert record["ranges"] == [(0, 4999)] and record["bytes"] == 5000


# --- which requests nginx may answer -------------------------------------------------------------

REP = Representation(size=1000, etag='"abc"', last_modified=1_700_000_000, content_type="audio/wav")
DATE = "Tue, 14 Nov 2023 22:13:20 GMT"  # REP's Last-Modified


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, (0, 999)),
        ({"range": "bytes=0-"}, (0, 999)),
        ({"range": "bytes=10-19"}, (10, 19)),
        ({"range": "bytes=990-5000"}, (990, 999)),
        ({"range": "bytes=-100"}, (900, 999)),
        ({"range": "bytes=-5000"}, (0, 999)),
        ({"range": "bytes=10-19", "if-range": '"abc"'}, (10, 19)),
        ({"range": "bytes=10-19", "if-none-match": '"other"'}, (10, 19)),
        ({"if-modified-since": "Thu, 01 Jan 1970 00:00:00 GMT"}, (0, 999)),
        ({"if-range": '"other"'}, (0, 999)),  # no Range: If-Range means nothing
        # tapevault answers these itself:
        ({"range": "bytes=1000-"}, None),  # 416
        ({"range": "bytes=-0"}, None),  # 416
        ({"range": "bytes=0-1,5-9"}, None),  # multipart
        ({"range": "bytes=0-1, 2-3"}, None),
        ({"range": "bytes= 0-9"}, None),
        ({"range": "Bytes=0-9"}, None),
        ({"range": "bytes=9-0"}, None),  # invalid: tapevault ignores it, nginx would 416
        ({"range": "bytes=0-99999999999999999999"}, None),  # nginx: overflow → 416
        ({"range": "items=0-9"}, None),
        ({"range": "bytes=10-19", "if-range": '"other"'}, None),  # 200 with a Range
        ({"range": "bytes=10-19", "if-range": DATE}, None),  # a date: two parsers
        ({"range": "bytes=10-19", "if-range": 'W/"abc"'}, None),
        ({"if-match": '"abc"'}, None),  # nginx would answer 412
        ({"if-unmodified-since": DATE}, None),
        ({"if-none-match": '"abc"'}, None),  # 304
        ({"if-modified-since": DATE}, None),  # 304
    ],
)
def test_handoff_range(headers: dict[str, str], expected: tuple[int, int] | None) -> None:
    """Only requests nginx is bound to answer exactly as tapevault decided are handed off."""
    assert handoff_range("GET", headers, REP) == expected


def test_head_and_empty_files_are_never_handed_off() -> None:
    assert handoff_range("HEAD", {}, REP) is None
    empty = Representation(size=0, etag='"e"', last_modified=0, content_type="audio/wav")
    assert handoff_range("GET", {}, empty) is None


# --- the settings --------------------------------------------------------------------------------


def test_accel_settings_are_checked(tmp_path: Path) -> None:
    """The location needs the local store, the delivery log and nginx as a trusted proxy; a
    location that is not a plain path is refused; a lease (TAPEVAULT_ACCEL_AUTHZ_SECONDS) is 0
    to 5 s and only with the location."""
    base = {"TAPEVAULT_DATA_DIR": str(tmp_path)}
    good = {
        **base,
        "TAPEVAULT_ACCEL_REDIRECT": "/_tapevault_files/",
        "TAPEVAULT_ACCEL_LOG": str(tmp_path / "delivery.log"),
        "TAPEVAULT_TRUSTED_PROXIES": "127.0.0.1",
    }
    settings = Settings.load(env=good)
    assert settings.accel_redirect == "/_tapevault_files/"
    assert Settings.load(env=settings.environment()).accel_log == tmp_path / "delivery.log"
    assert Settings.load(env=base).accel_redirect is None
    assert settings.accel_authz_seconds == 0
    leased = Settings.load(env={**good, "TAPEVAULT_ACCEL_AUTHZ_SECONDS": "2"})
    assert leased.accel_authz_seconds == 2
    assert Settings.load(env=leased.environment()).accel_authz_seconds == 2
    bad = [
        {**good, "TAPEVAULT_ACCEL_AUTHZ_SECONDS": "6"},
        {**good, "TAPEVAULT_ACCEL_AUTHZ_SECONDS": "-1"},
        {**good, "TAPEVAULT_ACCEL_AUTHZ_SECONDS": "1.5"},
        {**base, "TAPEVAULT_ACCEL_AUTHZ_SECONDS": "1"},
        {**good, "TAPEVAULT_ACCEL_REDIRECT": "/_files"},
        {**good, "TAPEVAULT_ACCEL_REDIRECT": "/../etc/"},
        {**good, "TAPEVAULT_ACCEL_REDIRECT": "/a b/"},
        {**good, "TAPEVAULT_ACCEL_LOG": ""},
        {**good, "TAPEVAULT_TRUSTED_PROXIES": ""},
        {**good, "TAPEVAULT_STORAGE_URL": "s3://bucket/audio"},
        {**base, "TAPEVAULT_ACCEL_LOG": str(tmp_path / "delivery.log")},
    ]
    for env in bad:
        with pytest.raises(ConfigError):
            Settings.load(env=env)


# --- nginx's delivery log ------------------------------------------------------------------------


def line(delivery: str, status: int = 206, sent: int = 10, first: int = 0) -> bytes:
    content_range = f"bytes {first}-{first + 9}/1000" if status == 206 else ""
    fields = {"d": delivery, "s": str(status), "b": str(sent), "r": content_range}
    return json.dumps(fields).encode() + b"\n"


def test_parse_line_refuses_what_is_not_a_delivery() -> None:
    assert parse_line(line("a.1")) == Report("a.1", 206, 10, "bytes 0-9/1000")
    assert parse_line(line("a.1", 200)) == Report("a.1", 200, 10, None)
    for garbled in (
        b"",
        b"not json",
        b'{"d":"a.1"}',
        b'{"d":"","s":"206","b":"1","r":""}',
        b'{"d":"a.1","s":"x","b":"1","r":""}',
        b'{"d":"a.1","s":"206","b":"-5","r":""}',
        b'{"d":7,"s":"206","b":"1","r":""}',
        b"[1,2]",
    ):
        assert parse_line(garbled) is None, garbled


def reader(tmp_path: Path) -> tuple[DeliveryLog, Handoffs, Playbacks, str, Path]:
    playbacks, playback_id = playback()
    handoffs = Handoffs(playbacks)
    path = tmp_path / "delivery.log"
    path.write_bytes(line("old.1") * 3)  # earlier lines: not read
    log = DeliveryLog(path, handoffs, lambda: 0)
    log._open(at_end=True)  # as start() does, without the thread: the test polls
    return log, handoffs, playbacks, playback_id, path


def test_the_reader_takes_its_own_lines_as_nginx_appends_them(tmp_path: Path) -> None:
    """Lines of other processes, garbled lines and a line still being written are skipped or
    kept for later; the process's own reports reach their playbacks."""
    log, handoffs, playbacks, playback_id, path = reader(tmp_path)
    assert log.ready
    one = handoffs.hand_off(playback_id, 206, 0, 10, now_ms=0)
    two = handoffs.hand_off(playback_id, 206, 100, 10, now_ms=0)
    assert one is not None and two is not None
    with path.open("ab") as out:
        out.write(line("elsewhere.1") + b"garbage\n" + line(one))
        out.write(line(two, first=100)[:20])  # nginx mid-write
    assert log.poll() == 1 and handoffs.in_flight == 1
    with path.open("ab") as out:
        out.write(line(two, first=100)[20:])
    assert log.poll() == 1 and handoffs.in_flight == 0
    assert log.garbled == 1
    record = seal(playbacks)
    assert record["ranges"] == [(0, 9), (100, 109)] and record["bytes"] == 20


def test_the_reader_follows_rotation_and_truncation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """logrotate's rename (nginx still writing to the old file until it reopens) and
    copytruncate (noticed at the next poll): no report is lost."""
    monkeypatch.setattr("tapevault.deliverylog.DRAIN_SECONDS", 0.0)
    log, handoffs, playbacks, playback_id, path = reader(tmp_path)
    ids = [handoffs.hand_off(playback_id, 206, i * 10, 10, now_ms=0) for i in range(4)]
    assert all(ids)
    rotated = tmp_path / "delivery.log.1"
    os.rename(path, rotated)
    with rotated.open("ab") as old:  # nginx has not reopened yet
        old.write(line(str(ids[0]), first=0))
    assert log.poll() == 1
    path.write_bytes(line(str(ids[1]), first=10))  # nginx reopened: a new file
    with rotated.open("ab") as old:  # a last line into the old one, read while draining
        old.write(line(str(ids[2]), first=20))
    assert log.poll() == 2
    assert log.ready
    with path.open("r+b") as current:  # copytruncate, noticed before the file grew back
        current.truncate(0)
    assert log.poll() == 0
    with path.open("ab") as current:
        current.write(line(str(ids[3]), first=30))
    assert log.poll() == 1
    assert handoffs.in_flight == 0
    record = seal(playbacks)
    assert record["ranges"] == [(0, 39)] and record["bytes"] == 40


def test_the_reader_is_not_ready_without_its_file(tmp_path: Path) -> None:
    """No file, nothing handed off; once nginx creates it, the reader opens it."""
    playbacks, _playback_id = playback()
    path = tmp_path / "delivery.log"
    log = DeliveryLog(path, Handoffs(playbacks), lambda: 0)
    log._open(at_end=True)
    assert not log.ready
    path.write_bytes(b"")
    log.poll()
    assert log.ready
    log.stop()
    assert not log.ready


def test_an_error_of_the_proxy_pauses_hand_offs() -> None:
    """When nginx answers a handed-off response with an error of its own (it cannot read the
    store), tapevault sends the bytes itself for a while, then tries nginx again."""
    playbacks, playback_id = playback()
    handoffs = Handoffs(playbacks)
    delivery = handoffs.hand_off(playback_id, 206, 0, 10, now_ms=0)
    assert delivery is not None
    handoffs.report(Report(delivery, 403, 153, None))
    assert handoffs.hand_off(playback_id, 206, 0, 10, now_ms=0) is None
    handoffs.paused_until = 0.0  # the pause is over
    again = handoffs.hand_off(playback_id, 206, 0, 10, now_ms=0)
    assert again is not None
    handoffs.cancel(again)
    record = seal(playbacks)
    assert record["detail"]["statuses"] == {"403": 1}
    assert record["bytes"] == 153 and record["ranges"] == []


def test_the_reader_reads_a_bounded_amount_per_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log that grew by much more than one poll reads (another process's traffic, an old file
    after a rotation) is read in bounded steps, and a report behind it still arrives."""
    monkeypatch.setattr("tapevault.deliverylog.POLL_BYTES", 4096)
    log, handoffs, _playbacks, playback_id, path = reader(tmp_path)
    delivery = handoffs.hand_off(playback_id, 206, 0, 10, now_ms=0)
    assert delivery is not None
    with path.open("ab") as out:
        out.write(line("elsewhere.1") * 1000 + line(delivery))
    polls = 1
    while log.poll() == 0:
        polls += 1
        assert polls < 1000
    assert polls > 10 and handoffs.in_flight == 0


def test_the_reader_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """A device or FIFO named by mistake is never read (it would never end)."""
    playbacks, _playback_id = playback()
    log = DeliveryLog(Path("/dev/zero"), Handoffs(playbacks), lambda: 0)
    log._open(at_end=True)
    assert not log.ready
    log.poll()
    assert not log.ready


@pytest.mark.parametrize("lease_seconds", [1, 2, 5])
@pytest.mark.parametrize("now_ms", [1_000_000, 1_000_001, 1_000_500, 1_000_999])
@pytest.mark.parametrize("expires_s", [999, 1000, 1001, 1002, 1003, 10**6])
def test_a_cached_answer_never_outlives_the_lease_or_the_url(
    lease_seconds: int, now_ms: int, expires_s: int
) -> None:
    """nginx uses an answer with X-Accel-Expires @T while its clock's second is at most T, so
    until T + 1: that is never after the URL's expiry nor after the lease's end; 0 (not
    cached) only when not even the current second fits."""
    until = cached_until(now_ms, expires_s, lease_seconds)
    limit_ms = min(expires_s * 1000, now_ms + lease_seconds * 1000)
    if until:
        assert (until + 1) * 1000 <= limit_ms
        assert until >= now_ms // 1000
        assert (until + 2) * 1000 > limit_ms  # no shorter than it has to be
    else:
        assert limit_ms < (now_ms // 1000 + 1) * 1000


def test_a_leased_playback_takes_the_proxys_reports_and_stays_open_for_the_lease() -> None:
    """A lease keeps the playback open until it ends (then idle as usual); each response the
    proxy reports under it adds its status, range and bytes (the proxy's 416 no audio); other
    processes' ids and error lines are not taken; the record names the lease's end."""
    playbacks, playback_id = playback()  # admitted at 1,000,000 ms
    metered: list[int] = []
    handoffs = Handoffs(playbacks, on_sent=metered.append)
    lease = handoffs.lease(playback_id, 1_005_000)
    assert lease is not None and handoffs.owns(lease) and playback_id in lease
    playbacks.abandon(playback_id)  # the question itself sends nothing
    assert handoffs.report(Report(lease, 206, 100, "bytes 500-599/1000"))
    assert handoffs.report(Report(lease, 206, 40, "bytes 0-99/1000"))  # the client left
    assert handoffs.report(Report(lease, 416, 181, "bytes */1000"))
    assert not handoffs.report(Report(lease, 404, 153, None))
    assert not handoffs.report(Report("other.L" + playback_id, 206, 10, "bytes 0-9/1000"))
    assert metered == [100, 40, 181]
    _updated, done = playbacks.due(1_004_999 + 30_000, final=False)
    assert done == []  # idle counts from the lease's end
    _updated, done = playbacks.due(1_005_000 + 30_000, final=False)
    ((sealed_id, entry),) = done
    assert sealed_id == playback_id
    assert entry.ranges == ((0, 39), (500, 599)) and entry.bytes_sent == 321
    assert entry.detail is not None
    assert entry.detail["requests"] == 3 and entry.detail["statuses"] == {"206": 2, "416": 1}
    assert entry.detail["proxy_until_ms"] == 1_005_000


def test_a_report_after_the_seal_goes_into_a_continuation_record() -> None:
    """A response the proxy was still sending when its leased playback was sealed is not
    lost: its report opens one continuation record naming the playback it continues."""
    playbacks, playback_id = playback()
    handoffs = Handoffs(playbacks)
    lease = handoffs.lease(playback_id, 1_002_000)
    assert lease is not None
    playbacks.abandon(playback_id)
    assert handoffs.report(Report(lease, 206, 10, "bytes 0-9/1000"))
    first = seal(playbacks)
    assert first["bytes"] == 10
    assert handoffs.report(Report(lease, 200, 1000, None))
    assert handoffs.report(Report(lease, 206, 5, "bytes 10-14/1000"))
    late = seal(playbacks)
    assert late["bytes"] == 1005 and late["ranges"] == [(0, 999)]
    assert late["detail"]["continues"] == playback_id
    assert late["detail"]["requests"] == 2


def test_no_lease_without_a_folding_log() -> None:
    """One record per response (no durable log): nothing to fold reports into, no lease."""
    per_request = PerRequest(MemoryAccessLog())
    playback_id = asyncio.run(per_request.admit("player", first_request))
    assert Handoffs(per_request).lease(playback_id, 10**12) is None
