"""Outsider probes: hostile or garbled nginx delivery lines are dropped, never folded into a
playback record with values no response can have (a status nginx never sends, a body larger
than any file), which the audit store's integer columns could not hold."""

from __future__ import annotations

import pytest

from tapevault.deliverylog import parse_line


@pytest.mark.parametrize(
    "line",
    [
        b'{"d":"p.L1","s":"99999999999999999999","b":"1"}',
        b'{"d":"p.L1","s":"-200","b":"1"}',
        b'{"d":"p.L1","s":"200","b":"' + b"9" * 40 + b'"}',
        b'{"d":"p.L1","s":"200","b":1.5}',
        b'{"d":"p.L1","s":200.9,"b":"1"}',
        b'["d","s","b"]',
        b'"d"',
        b"\x00\xff{}",
        b'{"d":"p.L1","s":"200","b":"1"',
    ],
)
def test_hostile_lines_are_dropped(line: bytes) -> None:
    assert parse_line(line) is None


def test_an_ordinary_line_is_taken() -> None:
    report = parse_line(b'{"d":"p.L1","s":"206","b":"65536","r":"bytes 0-65535/1048620"}')
    assert report is not None
    assert (report.status, report.body_bytes) == (206, 65536)
