"""RFC 9110 §13 precondition tables for tapevault.http.conditional."""

from __future__ import annotations

import pytest

from tapevault.http.conditional import (
    evaluate_preconditions,
    http_date,
    if_range_allows,
    parse_http_date,
)

ETAG = '"v1"'
LAST_MODIFIED = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC 9110 §5.6.7 example
AT = "Sun, 06 Nov 1994 08:49:37 GMT"
AT_RFC850 = "Sunday, 06-Nov-94 08:49:37 GMT"
AT_ASCTIME = "Sun Nov  6 08:49:37 1994"
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"  # one second earlier
AFTER = "Sun, 06 Nov 1994 08:49:38 GMT"  # one second later
LIST_OF_DATES = f"{AFTER}, {BEFORE}"

# (rule, method, headers, expected)
PRECEDENCE: list[tuple[str, str, dict[str, str], int | None]] = [
    ("no preconditions -> proceed", "GET", {}, None),
    # §13.1.1 If-Match, strong comparison
    ("13.1.1 If-Match same tag -> proceed", "GET", {"if-match": ETAG}, None),
    ("13.1.1 If-Match other tag -> 412", "GET", {"if-match": '"v2"'}, 412),
    ("13.1.1 If-Match * -> proceed", "GET", {"if-match": "*"}, None),
    ("13.1.1 If-Match in a list -> proceed", "GET", {"if-match": '"a", "v1"'}, None),
    ("13.1.1 If-Match weak tag never matches (strong)", "GET", {"if-match": 'W/"v1"'}, 412),
    ("13.1.1 If-Match unparsable -> 412", "GET", {"if-match": "v1"}, 412),
    ("13.1.1 If-Match applies to HEAD", "HEAD", {"if-match": '"v2"'}, 412),
    # §13.1.4 If-Unmodified-Since, only without If-Match
    ("13.1.4 IUS equal to Last-Modified -> proceed", "GET", {"if-unmodified-since": AT}, None),
    ("13.1.4 IUS after Last-Modified -> proceed", "GET", {"if-unmodified-since": AFTER}, None),
    ("13.1.4 IUS before Last-Modified -> 412", "GET", {"if-unmodified-since": BEFORE}, 412),
    ("13.1.4 IUS invalid date ignored", "GET", {"if-unmodified-since": "yesterday"}, None),
    ("13.1.4 IUS list of dates ignored", "GET", {"if-unmodified-since": LIST_OF_DATES}, None),
    (
        "13.1.4 IUS ignored when If-Match present",
        "GET",
        {"if-match": ETAG, "if-unmodified-since": BEFORE},
        None,
    ),
    # §13.2.2 step order
    (
        "13.2.2 If-Match (412) before If-None-Match (304)",
        "GET",
        {"if-match": '"v2"', "if-none-match": ETAG},
        412,
    ),
    (
        "13.2.2 IUS (412) before If-None-Match (304)",
        "GET",
        {"if-unmodified-since": BEFORE, "if-none-match": ETAG},
        412,
    ),
    (
        "13.2.2 If-Match passes, If-None-Match matches -> 304",
        "GET",
        {"if-match": ETAG, "if-none-match": ETAG},
        304,
    ),
    # §13.1.2 If-None-Match, weak comparison
    ("13.1.2 If-None-Match same tag on GET -> 304", "GET", {"if-none-match": ETAG}, 304),
    ("13.1.2 If-None-Match same tag on HEAD -> 304", "HEAD", {"if-none-match": ETAG}, 304),
    ("13.1.2 If-None-Match same tag on POST -> 412", "POST", {"if-none-match": ETAG}, 412),
    ("13.1.2 If-None-Match same tag on PUT -> 412", "PUT", {"if-none-match": ETAG}, 412),
    ("13.1.2 If-None-Match weak tag matches (weak)", "GET", {"if-none-match": 'W/"v1"'}, 304),
    ("13.1.2 If-None-Match * on GET -> 304", "GET", {"if-none-match": "*"}, 304),
    ("13.1.2 If-None-Match in a list", "GET", {"if-none-match": '"a" , W/"v1"'}, 304),
    ("13.1.2 If-None-Match other tag -> proceed", "GET", {"if-none-match": '"v2"'}, None),
    ("13.1.2 If-None-Match unparsable -> proceed", "GET", {"if-none-match": "v1"}, None),
    ("13.1.2 If-None-Match tag with comma inside", "GET", {"if-none-match": '"v,1"'}, None),
    (
        "13.1.3 IMS ignored when If-None-Match present",
        "GET",
        {"if-none-match": '"v2"', "if-modified-since": AT},
        None,
    ),
    # §13.1.3 If-Modified-Since, GET/HEAD only
    ("13.1.3 IMS equal to Last-Modified -> 304", "GET", {"if-modified-since": AT}, 304),
    ("13.1.3 IMS after Last-Modified -> 304", "GET", {"if-modified-since": AFTER}, 304),
    ("13.1.3 IMS before Last-Modified -> proceed", "GET", {"if-modified-since": BEFORE}, None),
    ("13.1.3 IMS on HEAD -> 304", "HEAD", {"if-modified-since": AT}, 304),
    ("13.1.3 IMS ignored on POST", "POST", {"if-modified-since": AT}, None),
    ("13.1.3 IMS invalid date ignored", "GET", {"if-modified-since": "not a date"}, None),
    ("13.1.3 IMS list of dates ignored", "GET", {"if-modified-since": LIST_OF_DATES}, None),
    ("5.6.7 IMS in RFC 850 form", "GET", {"if-modified-since": AT_RFC850}, 304),
    ("5.6.7 IMS in asctime form", "GET", {"if-modified-since": AT_ASCTIME}, 304),
    # §13.2.2 step 5: If-Range is not a precondition that can fail
    ("13.1.5 If-Range never yields 412", "GET", {"if-range": '"v2"'}, None),
]


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [pytest.param(m, h, e, id=rule) for rule, m, h, e in PRECEDENCE],
)
def test_precedence_table(method: str, headers: dict[str, str], expected: int | None) -> None:
    """Preconditions evaluate in RFC 9110 §13.2.2 order with the right outcome."""
    assert evaluate_preconditions(method, headers, ETAG, LAST_MODIFIED) == expected


IF_RANGE: list[tuple[str, str | None, bool]] = [
    ("13.1.5 same strong tag -> range", ETAG, True),
    ("13.1.5 same tag with OWS -> range", f" {ETAG} ", True),
    ("13.1.5 other tag -> full", '"v2"', False),
    ("13.1.5 weak tag never matches", 'W/"v1"', False),
    ("13.1.5 a list is not an If-Range value", f'{ETAG}, "v2"', False),
    ("13.1.5 unquoted tag is not an entity-tag", "v1", False),
    ("13.1.5 * is not an If-Range value", "*", False),
    ("13.1.5 date equal to Last-Modified -> range", AT, True),
    ("13.1.5 date equal, RFC 850 form -> range", AT_RFC850, True),
    ("13.1.5 date equal, asctime form -> range", AT_ASCTIME, True),
    ("13.1.5 earlier date -> full", BEFORE, False),
    ("13.1.5 later date -> full (exact match only)", AFTER, False),
    ("13.1.5 garbage -> full", "garbage", False),
    ("13.1.5 empty -> full", "", False),
    ("13.1.5 absent -> full", None, False),
]


@pytest.mark.parametrize(
    ("value", "expected"),
    [pytest.param(v, e, id=rule) for rule, v, e in IF_RANGE],
)
def test_if_range_table(value: str | None, expected: bool) -> None:
    """If-Range lets the Range through only on an exact strong validator match (§13.1.5)."""
    assert if_range_allows(value, ETAG, LAST_MODIFIED) is expected


def test_if_range_with_weak_representation_tag() -> None:
    """A weak entity-tag of our own cannot validate a range either (strong comparison)."""
    assert if_range_allows('W/"v1"', 'W/"v1"', LAST_MODIFIED) is False


def test_http_date_is_imf_fixdate() -> None:
    """Last-Modified is generated in the IMF-fixdate form of §5.6.7."""
    assert http_date(LAST_MODIFIED) == AT


@pytest.mark.parametrize("value", [AT, AT_RFC850, AT_ASCTIME])
def test_parse_http_date_accepts_three_forms(value: str) -> None:
    """Recipients must accept all three HTTP-date forms (§5.6.7)."""
    assert parse_http_date(value) == LAST_MODIFIED


@pytest.mark.parametrize("value", ["", "garbage", LIST_OF_DATES, "x" * 500, "06 Nov 1994"])
def test_parse_http_date_rejects_invalid(value: str) -> None:
    """Anything that is not one HTTP-date is None."""
    assert parse_http_date(value) is None
