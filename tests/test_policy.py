"""The lifecycle rules of the seed: URL lifetimes, retention and duration parsing."""

from __future__ import annotations

import pytest

from tapevault.core import policy
from tapevault.errors import InvalidRequest


@pytest.mark.parametrize(
    ("audio_ms", "expected"),
    [
        (0, 900),
        (60_000, 900),
        (5 * 60_000, 900),  # 5 + 10 = 15 minutes: still the minimum
        (5 * 60_000 + 1, 901),  # one second (rounded up) past it
        (15 * 60_000, 25 * 60),
        (3 * 3600_000, 3 * 3600 + 600),
        (30 * 86400_000, 7 * 86400),  # capped at a week
    ],
)
def test_streaming_lifetime(audio_ms: int, expected: int) -> None:
    """Streaming URLs: 15 minutes, or audio length plus 10 minutes when longer."""
    assert policy.url_lifetime_seconds(download=False, session_audio_ms=audio_ms) == expected


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


@pytest.mark.parametrize("text", ["", "0s", "-1d", "7w", "1.5h", "d", "99999999999d"])
def test_parse_duration_rejects(text: str) -> None:
    """Anything else is a clear error."""
    with pytest.raises(InvalidRequest):
        policy.parse_duration(text)
