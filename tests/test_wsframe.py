"""The live-stream fast path's RFC 6455 reader: whole messages out of any split of the bytes,
every violation a close code, and nothing else ever raised."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapevault.http.wsframe import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    FrameReader,
    ProtocolViolation,
    close_frame,
    parse_close,
    server_frame,
)
from tests.support import client_frame

MAX = 64 * 1024


class Collector:
    def __init__(self, max_size: int = MAX) -> None:
        self.events: list[tuple[str, object]] = []
        self.reader = FrameReader(max_size, self.binary, self.text, self.control)

    def binary(self, payload: bytes) -> None:
        self.events.append(("binary", payload))

    def text(self, text: str) -> None:
        self.events.append(("text", text))

    def control(self, opcode: int, payload: bytes) -> None:
        self.events.append((f"control{opcode}", payload))

    def feed_in(self, data: bytes, cuts: list[int]) -> None:
        """Feed ``data`` split at ``cuts`` (as TCP may split it)."""
        edges = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
        for a, b in itertools.pairwise(edges):
            self.reader.feed(data[a:b])


def violation(data: bytes, max_size: int = MAX) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as info:
        Collector(max_size).reader.feed(data)
    return info.value


messages = st.lists(
    st.one_of(
        st.tuples(st.just("binary"), st.binary(max_size=70_000), st.integers(1, 4)),
        st.tuples(st.just("text"), st.text(max_size=300), st.integers(1, 3)),
        st.tuples(st.just("ping"), st.binary(max_size=125), st.just(1)),
    ),
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(messages, st.lists(st.integers(0, 1 << 20), max_size=12))
def test_any_split_of_any_fragmentation_gives_the_messages(
    sent: list[tuple[str, object, int]], cuts: list[int]
) -> None:
    """Messages (fragmented into 1-4 frames, pings between) come out whole and in order, however
    the bytes are cut into reads; every length encoding (7, 16 and 64 bits) appears."""
    wire = b""
    expected: list[tuple[str, object]] = []
    for kind, body, parts in sent:
        if kind == "ping":
            assert isinstance(body, bytes)
            wire += client_frame(PING, body)
            expected.append((f"control{PING}", body))
            continue
        raw = body if isinstance(body, bytes) else str(body).encode()
        step = max(1, -(-len(raw) // parts))
        pieces = [raw[i : i + step] for i in range(0, len(raw), step)] or [b""]
        for i, piece in enumerate(pieces):
            opcode = (BINARY if kind == "binary" else TEXT) if i == 0 else CONTINUATION
            wire += client_frame(opcode, piece, fin=i == len(pieces) - 1)
            if i == 0 and len(pieces) > 1:
                wire += client_frame(PONG, b"x")  # control frames may come between fragments
                expected.append((f"control{PONG}", b"x"))
        expected.append((kind, body))
    collector = Collector(max_size=1 << 20)
    collector.feed_in(wire, cuts)
    assert collector.events == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=5))
def test_hostile_bytes_raise_nothing_but_a_close_code(data: bytes, cuts: list[int]) -> None:
    collector = Collector(max_size=256)
    try:
        collector.feed_in(data, cuts)
    except ProtocolViolation as exc:
        assert exc.code in (1002, 1007, 1009)


def test_the_common_case_is_one_callback_per_read() -> None:
    collector = Collector()
    frames = [os.urandom(640) for _ in range(3)]
    collector.reader.feed(b"".join(client_frame(BINARY, f) for f in frames))
    assert collector.events == [("binary", f) for f in frames]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(BINARY, b"abcd", masked=False), 1002),
        (client_frame(BINARY, b"abcd", rsv=4), 1002),  # RSV1: permessage-deflate not agreed
        (client_frame(3, b""), 1002),
        (client_frame(0xB, b""), 1002),
        (client_frame(PING, b"x" * 126), 1002),
        (client_frame(PING, b"x", fin=False), 1002),
        (client_frame(CONTINUATION, b"x"), 1002),
        (client_frame(BINARY, b"x", fin=False) + client_frame(TEXT, b"y"), 1002),
        (client_frame(TEXT, b"\xff\xfe"), 1007),
        (client_frame(TEXT, "é".encode()[:1], fin=False) + client_frame(CONTINUATION, b""), 1007),
        (client_frame(CLOSE, b"\x03"), 1002),
        (client_frame(CLOSE, (1005).to_bytes(2, "big")), 1002),
        (client_frame(CLOSE, (999).to_bytes(2, "big")), 1002),
        (client_frame(CLOSE, (1000).to_bytes(2, "big") + b"\xc3"), 1007),
    ],
)
def test_violations_close_with_their_code(data: bytes, code: int) -> None:
    assert violation(data).code == code


def test_an_oversized_message_is_refused_from_its_header() -> None:
    """1009 as soon as the length is known, before any of the payload is buffered."""
    head = bytes((0x80 | BINARY, 0x80 | 127)) + (1 << 40).to_bytes(8, "big")
    assert violation(head, max_size=1 << 20).code == 1009
    fragments = client_frame(BINARY, b"x" * 600, fin=False) + client_frame(CONTINUATION, b"x" * 600)
    assert violation(fragments, max_size=1000).code == 1009


def test_close_frames() -> None:
    assert parse_close(b"") == (1005, "")
    assert parse_close((4400).to_bytes(2, "big") + b"why") == (4400, "why")
    frame = close_frame(4400, "é" * 100)  # 200 bytes of reason, cut on a character boundary
    assert frame[0] == 0x88 and frame[1] <= 125 and len(frame) == 2 + frame[1]
    code, reason = parse_close(frame[2:])
    assert code == 4400 and reason == "é" * 61


def test_server_frames_use_every_length_encoding() -> None:
    for n, header in ((125, 2), (126, 4), (65_536, 10)):
        frame = server_frame(BINARY, b"\x00" * n)
        assert len(frame) == header + n and frame[0] == 0x82 and not frame[1] & 0x80
