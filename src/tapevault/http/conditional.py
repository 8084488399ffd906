"""Conditional requests for one immutable representation (RFC 9110 §13).

Pure functions over a mapping of lower-cased header names to values, the representation's strong
entity tag (``'"abc"'``, quotes included) and its Last-Modified time in Unix seconds.

:func:`evaluate_preconditions` follows the order of §13.2.2:

1. ``If-Match``: false unless one listed entity-tag matches by *strong* comparison (or the value
   is ``*``, §13.1.1) → 412.
2. only without ``If-Match``, ``If-Unmodified-Since``: false if the representation was modified
   after the date → 412. An invalid date is ignored (§13.1.4).
3. ``If-None-Match``: true unless one listed entity-tag matches by *weak* comparison (or ``*``);
   false → 304 for GET and HEAD, 412 for any other method (§13.1.2).
4. only without ``If-None-Match`` and only for GET and HEAD, ``If-Modified-Since``: false if the
   representation was not modified after the date → 304. An invalid date is ignored (§13.1.3).
5. ``If-Range`` only gates a ``Range`` (§13.1.5): see :func:`if_range_allows`.

An entity-tag list that cannot be parsed matches nothing: If-Match then fails (412) and
If-None-Match passes (the full response is sent), the safe side of each.

HTTP-dates are read with :mod:`email.utils`, which takes all three formats a recipient must accept
(IMF-fixdate, RFC 850 and asctime, §5.6.7); a date without a zone is GMT. A value that looks like a
list of dates is not a valid HTTP-date (§13.1.3, §13.1.4).
"""

from __future__ import annotations

import calendar
import email.utils
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

__all__ = [
    "evaluate_preconditions",
    "http_date",
    "if_range_allows",
    "parse_http_date",
]

# entity-tag = [ W/ ] DQUOTE *etagc DQUOTE ; etagc = %x21 / %x23-7E / obs-text (§8.8.3)
_ENTITY_TAG = re.compile(r'[ \t]*(W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|\Z)')
_LIST_GAP = re.compile(r"[ \t]*(?:,|\Z)")  # an empty list element (§5.6.1.2)
_MAX_DATE_LEN = 64  # the longest valid form (RFC 850 with "Wednesday") is 37 characters
_SAFE_METHODS = frozenset({"GET", "HEAD"})


def _entity_tags(value: str) -> list[tuple[bool, str]] | None:
    """Parse ``#entity-tag`` into (weak, opaque-tag) pairs; None if the list is malformed."""
    tags: list[tuple[bool, str]] = []
    pos, end = 0, len(value)
    while pos < end:
        match = _ENTITY_TAG.match(value, pos)
        if match is not None:
            tags.append((match.group(1) is not None, match.group(2)))
        else:
            match = _LIST_GAP.match(value, pos)
            if match is None or match.end() == pos:
                return None
        pos = match.end()
    return tags


def _split_etag(etag: str) -> tuple[bool, str]:
    """Split the representation's own entity-tag into (weak, opaque-tag)."""
    if etag.startswith("W/"):
        return True, etag[2:]
    return False, etag


def _matches(value: str, etag: str, *, strong: bool) -> bool:
    """Whether the If-Match / If-None-Match ``value`` matches ``etag`` (§8.8.3.2 comparison)."""
    if value.strip(" \t") == "*":
        return True  # "*" matches any current representation, and ours exists
    tags = _entity_tags(value)
    if not tags:
        return False
    own_weak, own_opaque = _split_etag(etag)
    if strong:
        return not own_weak and any(not weak and opaque == own_opaque for weak, opaque in tags)
    return any(opaque == own_opaque for _weak, opaque in tags)


def parse_http_date(value: str) -> int | None:
    """Return an HTTP-date (§5.6.7) as Unix seconds, or None if it is not a valid one."""
    if len(value) > _MAX_DATE_LEN or value.count(",") > 1:
        return None
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    offset = parsed[9] or 0
    try:
        return calendar.timegm(parsed[:9]) - offset
    except (ValueError, OverflowError):
        return None


@lru_cache(maxsize=4096)
def http_date(timestamp: int) -> str:
    """Format Unix seconds as an IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``.

    Memoised: every ranged read of a recording sends its Last-Modified again."""
    return email.utils.formatdate(timestamp, usegmt=True)


def evaluate_preconditions(
    method: str,
    headers: Mapping[str, str],
    etag: str,
    last_modified: int,
) -> Literal[304, 412] | None:
    """Evaluate the preconditions of §13.2.2 in order: None to proceed, else 304 or 412."""
    if_match = headers.get("if-match")
    if if_match is not None:
        if not _matches(if_match, etag, strong=True):
            return 412
    else:
        if_unmodified_since = headers.get("if-unmodified-since")
        if if_unmodified_since is not None:
            date = parse_http_date(if_unmodified_since)
            if date is not None and last_modified > date:
                return 412

    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if _matches(if_none_match, etag, strong=False):
            return 304 if method in _SAFE_METHODS else 412
    elif method in _SAFE_METHODS:
        if_modified_since = headers.get("if-modified-since")
        if if_modified_since is not None:
            date = parse_http_date(if_modified_since)
            if date is not None and last_modified <= date:
                return 304
    return None


def if_range_allows(header_value: str | None, etag: str, last_modified: int) -> bool:
    """Whether an ``If-Range`` value lets the ``Range`` be honoured (§13.1.5).

    True only for a strong entity-tag identical to ``etag``, or an HTTP-date equal to
    ``last_modified``. A weak entity-tag never matches; anything unparsable is False, which
    means: ignore the Range and send the whole representation (never 412).
    """
    if header_value is None:
        return False
    value = header_value.strip(" \t")
    if value.startswith(('"', "W/")):
        own_weak, own_opaque = _split_etag(etag)
        return not own_weak and value == own_opaque and _entity_tags(value) == [(False, value)]
    return parse_http_date(value) == last_modified
