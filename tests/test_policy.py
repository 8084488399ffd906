"""The lifecycle rules of the seed: URL lifetimes, retention and duration parsing."""

from __future__ import annotations

import pytest

from tapevault.core import policy
from tapevault.errors import InvalidRequest


@pytest.mark.parametrize(
    ("audio_ms", "expected"),
    [
        (0, 900),
        (6 * 60_000, 900),  # a 6-minute session: 15 minutes, not 6 + 10
        (14 * 60_000 + 59_000, 900),  # 14:59
        (15 * 60_000, 900),  # 15:00 is still a short session
        (15 * 60_000 + 1, 901 + 600),  # a millisecond more counts as 15:01 (rounded up)
        (15 * 60_000 + 1_000, 901 + 600),  # 15:01: length plus 10 minutes
        (3 * 3600_000, 3 * 3600 + 600),
        (7 * 86400_000 - 600_000, 7 * 86400),  # exactly reaches the week
        (30 * 86400_000, 7 * 86400),  # capped at a week
    ],
)
def test_streaming_lifetime(audio_ms: int, expected: int) -> None:
    """Streaming URLs: 15 minutes up to and including 15 minutes of audio, above that the
    audio length plus 10 minutes (the guide's rule), never more than a week."""
    assert policy.url_lifetime_seconds(download=False, session_audio_ms=audio_ms) == expected


RETENTION_END_MS = 1_800_000_000_000  # a whole second


@pytest.mark.parametrize(
    ("expires", "end_ms", "expected"),
    [
        (1_800_000_000 - 11 + 900, RETENTION_END_MS, 1_800_000_000),  # issued 11 s before the end
        (1_800_000_001, RETENTION_END_MS, 1_800_000_000),  # one second past the end
        (1_800_000_000, RETENTION_END_MS, 1_800_000_000),  # exactly the end: unchanged
        (1_799_999_999, RETENTION_END_MS, 1_799_999_999),  # earlier than the end: unchanged
        (1_800_000_900, RETENTION_END_MS - 1, 1_799_999_999),  # never past an end inside a second
        (1_800_000_900, RETENTION_END_MS + 999, 1_800_000_000),
        (1_800_000_900, RETENTION_END_MS + 1_000, 1_800_000_001),
    ],
)
def test_url_expiry_is_capped_at_retention_end(expires: int, end_ms: int, expected: int) -> None:
    """A URL's expiry never lies past the instant its recording stops being served."""
    capped = policy.capped_expiry(expires, end_ms)
    assert capped == expected
    assert capped * 1000 <= end_ms


def test_held_recording_urls_are_not_capped() -> None:
    """A legal hold serves a recording past its retention, so its URLs keep their lifetime."""
    assert policy.capped_expiry(1_800_000_900, RETENTION_END_MS, held=True) == 1_800_000_900


def test_download_lifetime_is_one_hour() -> None:
    """Download URLs live one hour whatever the audio length."""
    for audio_ms in (0, 10 * 3600_000):
        assert policy.url_lifetime_seconds(download=True, session_audio_ms=audio_ms) == 3600


def test_retention_boundary() -> None:
    """A recording expires exactly at session creation plus retention."""
    expires = policy.retention_expiry_ms(1_000_000, 30)
    assert expires == 1_030_000
    assert not policy.is_expired(expires, 1_029_999)
    assert policy.is_expired(expires, 1_030_000)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("12h", 43200), ("7d", 604800), ("45", 45)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    """Durations accept s, m, h, d and bare seconds."""
    assert policy.parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "0s", "-1d", "7w", "1.5h", "d", "99999999999d", "\uff11h", "\u0663h", "\u00b2d"]
)
def test_parse_duration_rejects(text: str) -> None:
    """Anything else is a clear error."""
    with pytest.raises(InvalidRequest):
        policy.parse_duration(text)
