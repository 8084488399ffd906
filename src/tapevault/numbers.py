"""Decimal numbers in hostile text.

``str.isdigit`` is true for superscripts and other scripts' digits ("²", "١٢٣"), which ``int``
then refuses or reads as something else; every number tapevault parses from outside is plain
ASCII digits, checked here.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")
_CANONICAL = re.compile(r"0|[1-9][0-9]*")


def is_digits(text: str, max_length: int = 18) -> bool:
    """``text`` is 1 to ``max_length`` ASCII digits (so ``int(text)`` cannot fail)."""
    return len(text) <= max_length and _DIGITS.fullmatch(text) is not None


def is_canonical(text: str, max_length: int = 18) -> bool:
    """``text`` is the one decimal spelling of a natural number: ASCII digits, no sign, no
    spaces, no leading zero (except "0" itself). A signed number must have exactly one spelling,
    or a signed URL could be respelled ("e=0170...") and still verify."""
    return len(text) <= max_length and _CANONICAL.fullmatch(text) is not None
