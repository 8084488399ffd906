"""RFC 9110 §14 table and properties for tapevault.core.ranges.parse_range.

Every expectation comes from the RFC (section named in each case), not from the parser's output.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapevault.core.ranges import (
    ByteRange,
    RangeDecision,
    Satisfiable,
    Unsatisfiable,
    Whole,
    parse_range,
)

HUGE = "99999999999999999999"  # 10**20 - 1: past any 64-bit integer


def sat(*pairs: tuple[int, int]) -> Satisfiable:
    """Build the expected Satisfiable decision from inclusive (start, end) pairs."""
    return Satisfiable(tuple(ByteRange(a, b) for a, b in pairs))


WHOLE = Whole()
UNSAT = Unsatisfiable()

# (rule, header, size, expected)
RFC_TABLE: list[tuple[str, str | None, int, RangeDecision]] = [
    # §14.2: no Range, or a unit the server does not understand -> ignore (200)
    ("14.2 no Range header", None, 100, WHOLE),
    ("14.2 unknown unit 'items' is ignored", "items=0-1", 100, WHOLE),
    ("14.2 unknown unit 'none' is ignored", "none", 100, WHOLE),
    ("14.1 unit compares case-insensitively (upper)", "BYTES=0-1", 100, sat((0, 1))),
    ("14.1 unit compares case-insensitively (mixed)", "Bytes=0-1", 100, sat((0, 1))),
    # §14.1.2 int-range forms
    ("14.1.2 bytes=0-1 (Safari probe) -> first two bytes", "bytes=0-1", 100, sat((0, 1))),
    ("14.1.2 bytes=0- (<audio>) -> everything", "bytes=0-", 100, sat((0, 99))),
    ("14.1.2 bytes=0-0 -> first byte", "bytes=0-0", 100, sat((0, 0))),
    ("14.1.2 last byte by position", "bytes=99-99", 100, sat((99, 99))),
    ("14.1.2 open range from the last byte", "bytes=99-", 100, sat((99, 99))),
    ("14.1.2 last-pos >= length is clamped", "bytes=50-1000", 100, sat((50, 99))),
    ("14.1.2 last-pos == length is clamped", "bytes=0-100", 100, sat((0, 99))),
    # §14.1.2 suffix-range forms
    ("14.1.2 suffix selects the last n bytes", "bytes=-10", 100, sat((90, 99))),
    ("14.1.2 suffix equal to the length selects all", "bytes=-100", 100, sat((0, 99))),
    ("14.1.2 suffix longer than the file selects all", "bytes=-1000", 100, sat((0, 99))),
    ("14.1.1 suffix-length 0 is unsatisfiable", "bytes=-0", 100, UNSAT),
    ("14.1.1 suffix -00 is still zero", "bytes=-00", 100, UNSAT),
    # §14.1.1 satisfiable only if first-pos < length
    ("14.1.1 first-pos == length is unsatisfiable", "bytes=100-", 100, UNSAT),
    ("14.1.1 first-pos > length is unsatisfiable", "bytes=100-200", 100, UNSAT),
    # big numbers: no overflow, clamped
    ("big last-pos is clamped", f"bytes=0-{HUGE}", 100, sat((0, 99))),
    ("big first-pos is unsatisfiable", f"bytes={HUGE}-", 100, UNSAT),
    ("big first and last equal is unsatisfiable", f"bytes={HUGE}-{HUGE}", 100, UNSAT),
    ("big suffix selects all", f"bytes=-{HUGE}", 100, sat((0, 99))),
    ("big last < big first is invalid", f"bytes={HUGE}-{HUGE[:-1]}8", 100, WHOLE),
    ("leading zeros are digits", "bytes=000-001", 100, sat((0, 1))),
    # §14.1.1 invalid syntax -> ignore the header (200)
    ("14.1.1 last-pos < first-pos is invalid", "bytes=5-4", 100, WHOLE),
    ("14.1.1 range-set needs 1 spec: 'bytes='", "bytes=", 100, WHOLE),
    ("14.1.1 range-set needs 1 spec: only commas", "bytes=, ,", 100, WHOLE),
    ("14.1.1 no '=' at all", "bytes", 100, WHOLE),
    ("14.1.1 empty value", "", 100, WHOLE),
    ("14.1.1 garbage", "garbage", 100, WHOLE),
    ("14.1.1 no dash", "bytes=1", 100, WHOLE),
    ("14.1.1 lone dash", "bytes=-", 100, WHOLE),
    ("14.1.1 letters", "bytes=a-b", 100, WHOLE),
    ("14.1.1 double dash", "bytes=--1", 100, WHOLE),
    ("14.1.1 two dashes", "bytes=1-2-3", 100, WHOLE),
    ("14.1.1 negative suffix with a last-pos", "bytes=-1-2", 100, WHOLE),
    ("14.1.1 DIGIT only: no sign", "bytes=+1-2", 100, WHOLE),
    ("14.1.1 DIGIT only: no underscore", "bytes=1_0-20", 100, WHOLE),
    ("14.1.1 DIGIT only: no hex", "bytes=0x1-20", 100, WHOLE),
    ("14.1.1 DIGIT only: ASCII digits", "bytes=\uff11-2", 100, WHOLE),
    ("14.1.1 no OWS around '-'", "bytes=0 - 1", 100, WHOLE),
    ("14.1.1 no OWS before '='", "bytes =0-1", 100, WHOLE),
    ("14.1.1 one invalid spec spoils the set", "bytes=0-1,5-4", 100, WHOLE),
    # §5.6.1 list syntax: OWS around commas, empty elements ignored; §5.5 value is trimmed
    ("5.6.1 OWS after comma", "bytes=0-1, 5-6", 100, sat((0, 1), (5, 6))),
    ("5.6.1 OWS around comma, tabs", "bytes=0-1 ,\t5-6", 100, sat((0, 1), (5, 6))),
    ("5.6.1 OWS after '='", "bytes= 0-1", 100, sat((0, 1))),
    ("5.5 surrounding whitespace trimmed", "  bytes=0-1\t", 100, sat((0, 1))),
    ("5.6.1.2 empty element ignored", "bytes=0-1,,5-6", 100, sat((0, 1), (5, 6))),
    ("5.6.1.2 leading empty element ignored", "bytes=,0-1", 100, sat((0, 1))),
    ("5.6.1.2 trailing empty element ignored", "bytes=0-1,", 100, sat((0, 1))),
    # several ranges: §14.6 coalescing, sorted
    ("14.6 disjoint ranges kept", "bytes=0-1,5-6", 100, sat((0, 1), (5, 6))),
    ("14.6 disjoint ranges sorted", "bytes=5-6,0-1", 100, sat((0, 1), (5, 6))),
    ("14.6 overlapping ranges coalesced", "bytes=0-10,5-20", 100, sat((0, 20))),
    ("14.6 contained range coalesced", "bytes=0-50,10-20", 100, sat((0, 50))),
    ("14.6 adjacent ranges coalesced", "bytes=0-4,5-9", 100, sat((0, 9))),
    ("14.6 one-byte gap kept apart", "bytes=0-4,6-9", 100, sat((0, 4), (6, 9))),
    ("14.6 first and last byte", "bytes=0-0,-1", 100, sat((0, 0), (99, 99))),
    ("14.6 suffix and open range coalesced", "bytes=-50,0-", 100, sat((0, 99))),
    ("14.6 duplicates coalesced", "bytes=3-4,3-4,3-4", 100, sat((3, 4))),
    # §14.1.1 a set is satisfiable if at least one spec is
    ("14.1.1 satisfiable spec wins over unsatisfiable", "bytes=0-1,200-300", 100, sat((0, 1))),
    ("14.1.1 satisfiable suffix wins over -0", "bytes=-0,-2", 100, sat((98, 99))),
    ("14.1.1 all unsatisfiable", "bytes=200-,-0,100-100", 100, UNSAT),
    # an empty representation: nothing is satisfiable, the rest as usual
    ("empty file: open range -> 416", "bytes=0-", 0, UNSAT),
    ("empty file: bytes=0-0 -> 416", "bytes=0-0", 0, UNSAT),
    ("empty file: suffix -> 416", "bytes=-1", 0, UNSAT),
    ("empty file: Safari probe -> 416", "bytes=0-1", 0, UNSAT),
    ("empty file: no header -> 200", None, 0, WHOLE),
    ("empty file: unknown unit -> 200", "items=0-1", 0, WHOLE),
    ("empty file: invalid -> 200", "bytes=5-4", 0, WHOLE),
    # one-byte representation
    ("one byte: open range", "bytes=0-", 1, sat((0, 0))),
    ("one byte: suffix", "bytes=-5", 1, sat((0, 0))),
    ("one byte: second byte", "bytes=1-", 1, UNSAT),
]


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [pytest.param(h, s, e, id=rule) for rule, h, s, e in RFC_TABLE],
)
def test_rfc9110_table(header: str | None, size: int, expected: RangeDecision) -> None:
    """Each Range form decides what RFC 9110 says it must."""
    assert parse_range(header, size) == expected


def _many(n: int) -> str:
    return "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(n))


def test_cap_allows_max_ranges() -> None:
    """16 disjoint ranges (the default cap) are served as 16 parts."""
    decision = parse_range(_many(16), 100)
    assert decision == sat(*((2 * i, 2 * i) for i in range(16)))


def test_cap_past_max_ranges_is_whole() -> None:
    """§14.2 DoS guard: a 17th range-spec makes the server ignore the header (200)."""
    assert parse_range(_many(17), 100) == WHOLE


def test_cap_counts_specs_not_merged_ranges() -> None:
    """The cap bounds work before coalescing: 17 copies of one range still exceed it."""
    assert parse_range("bytes=" + ",".join(["0-1"] * 17), 100) == WHOLE


def test_cap_ignores_empty_list_elements() -> None:
    """Empty list elements (§5.6.1.2) are not range-specs and do not count against the cap."""
    assert parse_range("bytes=0-0,,,,2-2", 100, max_ranges=2) == sat((0, 0), (2, 2))
    assert parse_range("bytes=0-0,2-2,4-4", 100, max_ranges=2) == WHOLE


def test_header_length_cap() -> None:
    """A header longer than max_header_len is ignored (200); one at the limit is parsed."""
    at_limit = "bytes=0-1" + " " * (1024 - len("bytes=0-1"))
    assert len(at_limit) == 1024
    assert parse_range(at_limit, 100) == sat((0, 1))
    assert parse_range(at_limit + " ", 100) == WHOLE
    assert parse_range("bytes=0-1", 100, max_header_len=8) == WHOLE


def test_absurdly_long_number_is_ignored() -> None:
    """A 5,000-digit position neither crashes int() nor is honoured (DoS guard, 200)."""
    header = "bytes=0-" + "9" * 5000
    assert parse_range(header, 100, max_header_len=10_000) == WHOLE


def test_byte_range_length_is_inclusive() -> None:
    """Content-Range positions are inclusive (§14.4): bytes 0-1 are two bytes."""
    assert ByteRange(0, 1).length == 2
    assert ByteRange(5, 5).length == 1


def test_satisfiable_is_never_empty() -> None:
    """A 206 needs at least one range, so an empty Satisfiable cannot be built."""
    with pytest.raises(ValueError, match="at least one"):
        Satisfiable(())


def test_negative_size_is_rejected() -> None:
    """A representation cannot have a negative length."""
    with pytest.raises(ValueError, match="negative"):
        parse_range("bytes=0-1", -1)


# --- properties --------------------------------------------------------------------------------

Spec = tuple[int | None, int | None]  # (first, last) int-range, (first, None) open, (None, n)

OWS = st.sampled_from(["", " ", "\t", " \t "])


@st.composite
def specs(draw: st.DrawFn, size: int) -> Spec:
    """One syntactically valid byte-range-spec, sometimes past the end or huge."""
    bound = size * 2 + 3
    number = st.one_of(st.integers(0, bound), st.just(10**20))
    kind = draw(st.sampled_from(["int", "open", "suffix"]))
    if kind == "suffix":
        return (None, draw(number))
    first = draw(number)
    if kind == "open":
        return (first, None)
    return (first, first + draw(st.one_of(st.integers(0, bound), st.just(10**20))))


def render(spec: Spec) -> str:
    """Write a spec the way a client would."""
    first, second = spec
    if first is None:
        return f"-{second}"
    return f"{first}-" if second is None else f"{first}-{second}"


def expected_bytes(spec_list: list[Spec], size: int) -> set[int]:
    """The offsets RFC 9110 §14.1.2 selects, computed one byte at a time."""
    offsets: set[int] = set()
    for first, second in spec_list:
        if first is None:
            assert second is not None
            if second > 0:
                offsets.update(range(max(0, size - second), size))
        elif first < size:
            last = size - 1 if second is None else min(second, size - 1)
            offsets.update(range(first, last + 1))
    return offsets


@st.composite
def requests(draw: st.DrawFn) -> tuple[int, list[Spec], str]:
    """A size, up to 16 valid specs, and a header spelling them with random OWS."""
    size = draw(st.integers(0, 600))
    spec_list = draw(st.lists(specs(size), min_size=1, max_size=16))
    unit = draw(st.sampled_from(["bytes", "BYTES", "Bytes"]))
    parts = [draw(OWS) + render(s) + draw(OWS) for s in spec_list]
    return size, spec_list, f"{unit}={','.join(parts)}"


@given(requests())
def test_property_union_of_valid_specs(request: tuple[int, list[Spec], str]) -> None:
    """Satisfiable ranges are in bounds, sorted, disjoint, and cover exactly the clamped specs."""
    size, spec_list, header = request
    decision = parse_range(header, size)
    wanted = expected_bytes(spec_list, size)
    if not wanted:
        assert decision == UNSAT  # §14.1.1: no satisfiable spec (and never Whole: syntax is valid)
        return
    assert isinstance(decision, Satisfiable)
    ranges = decision.ranges
    for r in ranges:
        assert 0 <= r.start <= r.end < size
    for before, after in itertools.pairwise(ranges):
        assert before.end + 1 < after.start  # sorted, disjoint and not even adjacent
    covered: set[int] = set()
    for r in ranges:
        covered.update(range(r.start, r.end + 1))
    assert covered == wanted


@given(st.text(max_size=80), st.integers(0, 1000))
def test_property_any_text_is_decided(header: str, size: int) -> None:
    """Any header text gets one of the three decisions, never an exception or a bad range."""
    decision = parse_range(header, size)
    assert isinstance(decision, Whole | Satisfiable | Unsatisfiable)
    if isinstance(decision, Satisfiable):
        assert all(0 <= r.start <= r.end < size for r in decision.ranges)


@given(
    st.lists(st.sampled_from(["0", "1", "9", "-", ",", " ", "=", "bytes"]), max_size=20),
    st.integers(0, 20),
)
def test_property_near_miss_syntax(tokens: list[str], size: int) -> None:
    """Strings built from Range's own characters never crash and stay in bounds."""
    decision = parse_range("bytes=" + "".join(tokens), size)
    if isinstance(decision, Satisfiable):
        assert all(0 <= r.start <= r.end < size for r in decision.ranges)
