"""Parse a ``Range`` request header into what a server must send (RFC 9110 §14).

A pure function, no HTTP framework: :func:`parse_range` takes the raw header value and the
representation's length and answers one of three decisions.

``Whole()`` -- ignore the header and send the full representation (200):

* no ``Range`` header at all (§14.2);
* a range unit other than ``bytes`` (§14.2: "An origin server MUST ignore a Range header field
  that contains a range unit it does not understand"); units compare case-insensitively (§14.1);
* a syntactically invalid ranges-specifier (§14.2: a server "MAY ignore or reject" an invalid one;
  we ignore): no ``=``, ``bytes=`` with no range-spec (the grammar is ``1#range-spec``), anything
  that is neither ``first-pos "-" [ last-pos ]`` nor ``"-" suffix-length`` with ASCII digits
  (§14.1.1), and an int-range whose last-pos is less than its first-pos, e.g. ``bytes=5-4``
  ("An int-range is invalid if the last-pos value is present and less than the first-pos");
* more than ``max_ranges`` range-specs, or a header longer than ``max_header_len`` characters
  (§14.2 lets a server ignore range sets that indicate "a broken client or a deliberate
  denial-of-service attack"; so does a number of more than 1,000 digits).

``Unsatisfiable()`` -- valid syntax but no range-spec is satisfiable (§14.1.1, answered with 416
and ``Content-Range: bytes */length`` per §15.5.17):

* an int-range is satisfiable only if first-pos < length;
* a suffix-range is satisfiable only if its suffix-length is non-zero, so ``bytes=-0`` is not;
* on an empty representation nothing is satisfiable: there is no byte a 206 could carry and
  ``Content-Range`` cannot express an empty range (``bytes 0--1/0``).

``Satisfiable(ranges)`` -- at least one range-spec is satisfiable (206). Unsatisfiable specs
among satisfiable ones are dropped ("A range-set is satisfiable if it contains at least one
range-spec that is satisfiable", §14.1.1). Each range is clamped to the representation:

* a last-pos past the end, or a missing one, means the last byte (§14.1.2: "If the last-pos value
  is absent, or if the value is greater than or equal to the current length of the representation
  data, the byte range is interpreted as the remainder of the representation");
* a suffix longer than the representation selects all of it (§14.1.2: "If the selected
  representation is shorter than the specified suffix-length, the entire representation is
  used");
* with several ranges, overlapping and adjacent ones are coalesced and the result is sorted
  (§14.6: a server MAY coalesce overlapping ranges "regardless of the order in which the
  corresponding range-spec appeared"). Sorting also reorders ranges that did not overlap; §15.3.7.2
  only says SHOULD keep the request order, and each part carries its own ``Content-Range``.

Numbers are Python integers, so ``bytes=0-99999999999999999999`` neither overflows nor crashes:
it is clamped like any other last-pos.

OWS is allowed around the commas of the list (§5.6.1, ``1#element``), and a reasonable number of
empty list elements is ignored (§5.6.1.2: a recipient "MUST parse and ignore" them). Leading and
trailing whitespace of the field value is not part of it (§5.5). There is no OWS in the grammar
around ``=`` or ``-``, so ``bytes = 0-1`` and ``bytes=0 - 1`` are invalid and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "ByteRange",
    "RangeDecision",
    "Satisfiable",
    "Unsatisfiable",
    "Whole",
    "parse_range",
]

_OWS = " \t"
# A number longer than this is no real position or length; ignoring the header keeps int()
# (quadratic in the digit count, and capped by sys.int_info) off the request path.
_MAX_DIGITS = 1000


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` to ``end`` of a representation, both inclusive (as in ``Content-Range``)."""

    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        """The number of bytes in the range."""
        return self.end - self.start + 1


@dataclass(frozen=True, slots=True)
class Whole:
    """Ignore the Range header and send the whole representation (200)."""


@dataclass(frozen=True, slots=True)
class Satisfiable:
    """Send these ranges (206): clamped, and sorted and coalesced when there are several."""

    ranges: tuple[ByteRange, ...]

    def __post_init__(self) -> None:
        if not self.ranges:
            raise ValueError("Satisfiable needs at least one range")


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """The header is valid but selects no byte of the representation (416)."""


RangeDecision: TypeAlias = Whole | Satisfiable | Unsatisfiable

_WHOLE = Whole()
_UNSATISFIABLE = Unsatisfiable()


def _number(text: str) -> int | None:
    """Return the value of a ``1*DIGIT`` token, or None if ``text`` is not one."""
    # str.isdigit alone accepts non-ASCII digits and int() accepts "+", "_" and spaces.
    if not text or len(text) > _MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def parse_range(
    header: str | None,
    size: int,
    *,
    max_ranges: int = 16,
    max_header_len: int = 1024,
) -> RangeDecision:
    """Decide what to send for the ``Range`` header value ``header`` on ``size`` bytes.

    See the module docstring for the RFC 9110 rule behind each outcome.
    """
    if size < 0:
        raise ValueError(f"size must not be negative, got {size}")
    if header is None or len(header) > max_header_len:
        return _WHOLE
    unit, eq, range_set = header.strip(_OWS).partition("=")
    if not eq or unit.lower() != "bytes":
        return _WHOLE

    # First pass: the whole header must be valid syntax before anything is served.
    specs: list[tuple[int | None, int | None]] = []  # (first-pos, last-pos) or (None, suffix)
    for element in range_set.split(","):
        spec = element.strip(_OWS)
        if not spec:
            continue  # empty list element (§5.6.1.2)
        if len(specs) == max_ranges:
            return _WHOLE
        first_text, dash, last_text = spec.partition("-")
        if not dash:
            return _WHOLE
        if not first_text:
            suffix = _number(last_text)
            if suffix is None:
                return _WHOLE
            specs.append((None, suffix))
            continue
        first = _number(first_text)
        if first is None:
            return _WHOLE
        if last_text:
            last = _number(last_text)
            if last is None or last < first:
                return _WHOLE
            specs.append((first, last))
        else:
            specs.append((first, None))
    if not specs:
        return _WHOLE

    # Second pass: keep the satisfiable specs, clamped to the representation.
    last_byte = size - 1
    selected: list[tuple[int, int]] = []
    for first_or_none, second in specs:
        if first_or_none is None:
            assert second is not None
            if second > 0 and size > 0:
                selected.append((max(size - second, 0), last_byte))
        elif first_or_none < size:
            end = last_byte if second is None or second > last_byte else second
            selected.append((first_or_none, end))
    if not selected:
        return _UNSATISFIABLE
    if len(selected) == 1:
        start, end = selected[0]
        return Satisfiable((ByteRange(start, end),))

    selected.sort()
    merged: list[ByteRange] = []
    cur_start, cur_end = selected[0]
    for start, end in selected[1:]:
        if start <= cur_end + 1:  # overlapping or adjacent
            if end > cur_end:
                cur_end = end
        else:
            merged.append(ByteRange(cur_start, cur_end))
            cur_start, cur_end = start, end
    merged.append(ByteRange(cur_start, cur_end))
    return Satisfiable(tuple(merged))
