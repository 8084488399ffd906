"""tapevault.http.ranged.send_representation, checked against RFC 9110 at the ASGI level.

A fake ``send`` collects the ASGI messages; responses are parsed here (multipart bodies with a
small parser written from RFC 2046 §5.1.1 and RFC 9110 §14.6, independent of the code under test)
and compared with the bytes of the file.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapevault.errors import StorageError
from tapevault.http.ranged import RangeReader, Representation, Served, send_representation

ETAG = '"rec-01"'
LAST_MODIFIED = 784111777
LAST_MODIFIED_DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
DATA = bytes(range(256)) * 4  # 1024 bytes, every byte value, position-dependent
CORS = (b"access-control-allow-origin", b"https://player.example")
DISPOSITION = (b"content-disposition", b'inline; filename="rec-01.wav"')
EXTRA = [CORS, DISPOSITION]


@dataclass
class Response:
    """One collected ASGI response."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    body_messages: list[bytes]

    def header(self, name: str) -> str | None:
        """The single value of a header, or None; fails if it appears more than once."""
        values = [v.decode("latin-1") for k, v in self.headers if k == name.encode()]
        assert len(values) <= 1, f"{name} appears {len(values)} times"
        return values[0] if values else None


@dataclass
class Reader:
    """An in-memory RangeReader that yields bounded chunks and records its calls."""

    data: bytes
    chunk: int = 7
    calls: list[tuple[int, int]] = field(default_factory=list)

    async def __call__(self, offset: int, length: int) -> AsyncIterator[bytes]:
        """Yield ``length`` bytes from ``offset`` in chunks of at most ``self.chunk``."""
        self.calls.append((offset, length))
        end = offset + length
        for pos in range(offset, end, self.chunk):
            await asyncio.sleep(0)
            yield self.data[pos : min(pos + self.chunk, end)]


def collect(messages: list[dict[str, Any]], method: str) -> Response:
    """Check the ASGI message sequence and assemble the response."""
    start, *body_messages = messages
    assert start["type"] == "http.response.start"
    headers = start["headers"]
    for name, value in headers:
        assert isinstance(name, bytes) and isinstance(value, bytes)
        assert name == name.lower(), "ASGI header names are lower-case"
    assert body_messages, "a response must end with an http.response.body message"
    assert all(m["type"] == "http.response.body" for m in body_messages)
    assert [m.get("more_body", False) for m in body_messages] == [True] * (
        len(body_messages) - 1
    ) + [False], "only the last body message ends the body"
    chunks = [m.get("body", b"") for m in body_messages]
    response = Response(start["status"], headers, b"".join(chunks), chunks)
    length = response.header("content-length")
    if method == "HEAD" or response.status == 304:
        assert response.body == b"", "HEAD and 304 have no content (§9.3.2, §15.4.5)"
    elif length is not None:
        assert len(response.body) == int(length), "Content-Length is exact (§8.6)"
    return response


async def serve(
    method: str = "GET",
    headers: dict[str, str] | None = None,
    data: bytes = DATA,
    reader: RangeReader | None = None,
    max_ranges: int = 16,
) -> tuple[Response, Served]:
    """Run send_representation against ``data`` and return the parsed response."""
    messages: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(dict(message))

    rep = Representation(
        size=len(data), etag=ETAG, last_modified=LAST_MODIFIED, content_type="audio/wav"
    )
    served = await send_representation(
        send,
        method=method,
        headers=headers or {},
        rep=rep,
        read=reader or Reader(data),
        extra_headers=list(EXTRA),
        max_ranges=max_ranges,
    )
    return collect(messages, method), served


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart/byteranges Content-Type."""
    match = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", content_type)
    assert match is not None, content_type
    return match.group(1)


def parse_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/byteranges body into (headers, content) per RFC 2046 §5.1.1."""
    dash = b"--" + boundary.encode()
    assert body.startswith(dash + b"\r\n"), "body starts with the first delimiter"
    assert body.endswith(b"\r\n" + dash + b"--\r\n"), "body ends with the close delimiter"
    # A delimiter is CRLF "--" boundary; the CRLF before it is not part of the content.
    pieces = (b"\r\n" + body).split(b"\r\n" + dash)
    assert pieces[0] == b"", "no preamble"
    assert pieces[-1] == b"--\r\n", "close delimiter then nothing"
    parts = []
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n"), "CRLF after the boundary"
        head, sep, content = piece[2:].partition(b"\r\n\r\n")
        assert sep, "blank line (CRLF CRLF) between part headers and content"
        part_headers = {}
        for line in head.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            assert colon and b"\n" not in line and b"\r" not in line
            part_headers[name.decode().lower()] = value.decode().strip()
        parts.append((part_headers, content))
    return parts


CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def content_range(value: str | None) -> tuple[int, int, int]:
    """Parse ``bytes a-b/len`` (§14.4) into (a, b, len)."""
    assert value is not None
    match = CONTENT_RANGE.fullmatch(value)
    assert match is not None, value
    a, b, length = (int(g) for g in match.groups())
    return a, b, length


def assert_common_headers(response: Response) -> None:
    """Fields every 200/206/416 carries: Accept-Ranges, validators, PHI caching, extras."""
    assert response.header("accept-ranges") == "bytes"
    assert response.header("etag") == ETAG
    assert response.header("last-modified") == LAST_MODIFIED_DATE
    assert response.header("cache-control") == "private, no-store"
    assert CORS in response.headers and DISPOSITION in response.headers


# --- 200 ---------------------------------------------------------------------------------------


async def test_200_without_range_sends_everything() -> None:
    """No Range: 200 with the whole file, its Content-Type and Content-Length."""
    response, served = await serve()
    assert response.status == 200
    assert_common_headers(response)
    assert response.header("content-type") == "audio/wav"
    assert response.header("content-length") == "1024"
    assert response.header("content-range") is None
    assert response.body == DATA
    assert served == Served(200, [(0, 1023)], 1024)


async def test_200_empty_file() -> None:
    """An empty file without Range is a 200 with Content-Length 0."""
    reader = Reader(b"")
    response, served = await serve(data=b"", reader=reader)
    assert response.status == 200
    assert response.header("content-length") == "0"
    assert response.body == b""
    assert served == Served(200, [], 0)


@pytest.mark.parametrize(
    "range_header",
    [
        pytest.param("bytes=5-4", id="14.1.1 last-pos < first-pos is invalid"),
        pytest.param("items=0-1", id="14.2 unknown unit ignored"),
        pytest.param("bytes=", id="14.1.1 no range-spec"),
        pytest.param("bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(17)), id="cap 16"),
    ],
)
async def test_ignored_range_gives_full_200(range_header: str) -> None:
    """A Range the server must or may ignore yields the full 200 (§14.2)."""
    response, _ = await serve(headers={"range": range_header})
    assert response.status == 200
    assert response.header("content-range") is None
    assert response.body == DATA


# --- 206 single --------------------------------------------------------------------------------


async def test_safari_probe_bytes_0_1() -> None:
    """Safari's bytes=0-1 probe gets a 206 with exactly two bytes and audio/wav."""
    response, served = await serve(headers={"range": "bytes=0-1"})
    assert response.status == 206
    assert_common_headers(response)
    assert response.header("content-type") == "audio/wav"
    assert response.header("content-range") == "bytes 0-1/1024"
    assert response.header("content-length") == "2"
    assert response.body == DATA[:2]
    assert served == Served(206, [(0, 1)], 2)


async def test_audio_element_bytes_0_open() -> None:
    """<audio>'s bytes=0- gets a 206 covering the whole file (§14.1.2)."""
    response, _ = await serve(headers={"range": "bytes=0-"})
    assert response.status == 206
    assert response.header("content-range") == "bytes 0-1023/1024"
    assert response.body == DATA


async def test_suffix_and_clamp() -> None:
    """A suffix longer than the file and a last-pos past the end are clamped (§14.1.2)."""
    response, _ = await serve(headers={"range": "bytes=-5000"})
    assert response.header("content-range") == "bytes 0-1023/1024"
    response, _ = await serve(headers={"range": "bytes=1000-99999999999999999999"})
    assert response.header("content-range") == "bytes 1000-1023/1024"
    assert response.body == DATA[1000:]


async def test_overlapping_ranges_merge_into_one_part_not_multipart() -> None:
    """One range after coalescing is a plain 206, never multipart (§14.6)."""
    response, _ = await serve(headers={"range": "bytes=0-10,5-20"})
    assert response.status == 206
    assert response.header("content-type") == "audio/wav"
    assert response.header("content-range") == "bytes 0-20/1024"
    assert response.body == DATA[:21]


# --- 206 multipart -----------------------------------------------------------------------------


async def test_multipart_byteranges_format() -> None:
    """Several ranges: multipart/byteranges, parts with their own headers, CRLF (§14.6)."""
    response, served = await serve(headers={"range": "bytes=0-1, 100-199, -5"})
    assert response.status == 206
    assert_common_headers(response)
    assert response.header("content-range") is None, "no top-level Content-Range (§14.6)"
    content_type = response.header("content-type")
    assert content_type is not None
    boundary = boundary_of(content_type)
    assert re.fullmatch(r"[0-9a-f]{32}", boundary)
    parts = parse_multipart(response.body, boundary)
    assert [h["content-range"] for h, _ in parts] == [
        "bytes 0-1/1024",
        "bytes 100-199/1024",
        "bytes 1019-1023/1024",
    ]
    assert all(h["content-type"] == "audio/wav" for h, _ in parts)
    assert [c for _, c in parts] == [DATA[0:2], DATA[100:200], DATA[1019:]]
    assert served.ranges == [(0, 1), (100, 199), (1019, 1023)]
    assert served.bytes_sent == len(response.body)


async def test_multipart_parses_with_stdlib_email() -> None:
    """A third-party MIME parser reads the same parts and bytes."""
    data = b"".join(b"%04d\n" % i for i in range(200))  # text, so MIME 7bit is exact
    response, _ = await serve(headers={"range": "bytes=10-19,500-509"}, data=data)
    content_type = response.header("content-type")
    assert content_type is not None
    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + response.body,
        policy=email.policy.HTTP,
    )
    assert message.is_multipart()
    parts = list(message.iter_parts())
    assert [p["Content-Range"] for p in parts] == ["bytes 10-19/1000", "bytes 500-509/1000"]
    assert [p.get_payload(decode=True) for p in parts] == [data[10:20], data[500:510]]


async def test_multipart_parts_sorted_and_coalesced() -> None:
    """Out-of-order and adjacent ranges come back sorted and coalesced."""
    response, _ = await serve(headers={"range": "bytes=500-509,0-4,5-9"})
    content_type = response.header("content-type")
    assert content_type is not None
    parts = parse_multipart(response.body, boundary_of(content_type))
    assert [h["content-range"] for h, _ in parts] == ["bytes 0-9/1024", "bytes 500-509/1024"]


# --- 416 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("range_header", "data"),
    [
        pytest.param("bytes=1024-", DATA, id="14.1.1 first-pos == length"),
        pytest.param("bytes=99999999999999999999-", DATA, id="huge first-pos"),
        pytest.param("bytes=-0", DATA, id="14.1.1 suffix-length 0"),
        pytest.param("bytes=0-1", b"", id="empty file, Safari probe"),
        pytest.param("bytes=0-", b"", id="empty file, open range"),
    ],
)
async def test_416_format(range_header: str, data: bytes) -> None:
    """Unsatisfiable: 416, Content-Range bytes */len (§15.5.17), JSON error body."""
    reader = Reader(data)
    response, served = await serve(headers={"range": range_header}, data=data, reader=reader)
    assert response.status == 416
    assert_common_headers(response)
    assert response.header("content-range") == f"bytes */{len(data)}"
    assert response.header("content-type") == "application/json"
    body = json.loads(response.body)
    assert body["code"] == 416 and isinstance(body["message"], str)
    assert reader.calls == [], "no file bytes are read for a 416"
    assert served.status == 416 and served.ranges == []


# --- If-Range ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        pytest.param(ETAG, 206, id="13.1.5 same strong tag -> 206"),
        pytest.param(LAST_MODIFIED_DATE, 206, id="13.1.5 same date -> 206"),
        pytest.param('"rec-02"', 200, id="13.1.5 other tag -> 200"),
        pytest.param('W/"rec-01"', 200, id="13.1.5 weak tag -> 200"),
        pytest.param("Sun, 06 Nov 1994 08:49:38 GMT", 200, id="13.1.5 other date -> 200"),
        pytest.param("nonsense", 200, id="13.1.5 unparsable -> 200"),
    ],
)
async def test_if_range(if_range: str, status: int) -> None:
    """If-Range match → 206; mismatch → the full 200, never 412 (§13.1.5)."""
    response, _ = await serve(headers={"range": "bytes=0-1", "if-range": if_range})
    assert response.status == status
    assert response.body == (DATA[:2] if status == 206 else DATA)


async def test_if_range_mismatch_also_ignores_unsatisfiable_range() -> None:
    """A failed If-Range ignores Range entirely: even an unsatisfiable one gives 200."""
    response, _ = await serve(headers={"range": "bytes=5000-", "if-range": '"old"'})
    assert response.status == 200
    assert response.body == DATA


async def test_if_range_without_range_is_ignored() -> None:
    """If-Range without Range changes nothing (§13.1.5)."""
    response, _ = await serve(headers={"if-range": '"old"'})
    assert response.status == 200


# --- 304 / 412 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "conditions",
    [
        pytest.param({"if-none-match": ETAG}, id="13.1.2 If-None-Match"),
        pytest.param({"if-none-match": f'"x", W/{ETAG}'}, id="13.1.2 weak comparison"),
        pytest.param({"if-modified-since": LAST_MODIFIED_DATE}, id="13.1.3 If-Modified-Since"),
        pytest.param({"if-none-match": ETAG, "range": "bytes=0-1"}, id="13.2.2 304 before Range"),
        pytest.param({"if-none-match": ETAG, "range": "bytes=9999-"}, id="13.2.2 304 before 416"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_304_not_modified(conditions: dict[str, str], method: str) -> None:
    """A cache's matching validator gets 304 with validators and caching fields, no body."""
    reader = Reader(DATA)
    response, served = await serve(method, headers=conditions, reader=reader)
    assert response.status == 304
    assert response.header("etag") == ETAG
    assert response.header("last-modified") == LAST_MODIFIED_DATE
    assert response.header("cache-control") == "private, no-store"
    assert CORS in response.headers
    # §8.6: a 304 may only carry the 200's Content-Length; omitting it is always right.
    assert response.header("content-length") in (None, "1024")
    assert response.header("content-range") is None
    assert reader.calls == []
    assert served == Served(304, [], 0)


@pytest.mark.parametrize(
    "conditions",
    [
        pytest.param({"if-match": '"rec-02"'}, id="13.1.1 If-Match mismatch"),
        pytest.param({"if-match": f"W/{ETAG}"}, id="13.1.1 weak tag fails strong comparison"),
        pytest.param(
            {"if-unmodified-since": "Sun, 06 Nov 1994 08:49:36 GMT"}, id="13.1.4 modified since"
        ),
        pytest.param({"if-match": '"x"', "range": "bytes=0-1"}, id="13.2.2 412 before Range"),
        pytest.param({"if-match": '"x"', "range": "bytes=9999-"}, id="13.2.2 412 before 416"),
        pytest.param({"if-match": '"x"', "if-none-match": ETAG}, id="13.2.2 412 before 304"),
    ],
)
async def test_412_precondition_failed(conditions: dict[str, str]) -> None:
    """A failed If-Match / If-Unmodified-Since is 412 with a JSON error body (§15.5.13)."""
    reader = Reader(DATA)
    response, served = await serve(headers=conditions, reader=reader)
    assert response.status == 412
    assert response.header("content-type") == "application/json"
    assert response.header("content-range") is None
    assert response.header("cache-control") == "private, no-store"
    body = json.loads(response.body)
    assert set(body) == {"code", "message"}
    assert body["code"] == 412 and isinstance(body["message"], str)
    assert reader.calls == []
    assert served.status == 412


async def test_other_method_is_405() -> None:
    """Only GET and HEAD are served here; anything else is 405 with Allow (§15.5.6)."""
    response, _ = await serve("POST")
    assert response.status == 405
    assert response.header("allow") == "GET, HEAD"
    assert json.loads(response.body)["code"] == 405


# --- HEAD == GET -------------------------------------------------------------------------------


HEAD_CASES = [
    pytest.param({}, id="200"),
    pytest.param({"range": "bytes=0-1"}, id="206 single"),
    pytest.param({"range": "bytes=0-1,10-20"}, id="206 multipart"),
    pytest.param({"range": "bytes=9999-"}, id="416"),
    pytest.param({"if-none-match": ETAG}, id="304"),
    pytest.param({"if-match": '"x"'}, id="412"),
    pytest.param({"range": "bytes=0-1", "if-range": '"old"'}, id="If-Range mismatch"),
]


def _without_boundary(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Headers with the random multipart boundary blanked out (its length is fixed)."""
    return [(k, re.sub(rb"boundary=[0-9a-f]{32}", b"boundary=B", v)) for k, v in headers]


@pytest.mark.parametrize("conditions", HEAD_CASES)
async def test_head_answers_as_get(conditions: dict[str, str]) -> None:
    """HEAD gets the status and header fields the matching GET gets, and no body (§9.3.2)."""
    head_reader = Reader(DATA)
    get, get_served = await serve("GET", headers=conditions)
    head, head_served = await serve("HEAD", headers=conditions, reader=head_reader)
    assert head.status == get.status
    assert _without_boundary(head.headers) == _without_boundary(get.headers)
    assert head.body == b""
    assert head_reader.calls == [], "HEAD reads no bytes"
    assert head_served.ranges == get_served.ranges
    assert head_served.bytes_sent == 0


async def test_head_with_range_gives_206_headers() -> None:
    """HEAD with Range gives the 206 headers a GET would get, without content."""
    response, _ = await serve("HEAD", headers={"range": "bytes=0-1"})
    assert response.status == 206
    assert response.header("content-range") == "bytes 0-1/1024"
    assert response.header("content-length") == "2"
    assert response.body == b""


# --- streaming ---------------------------------------------------------------------------------


async def test_body_is_streamed_in_reader_chunks() -> None:
    """The body goes out chunk by chunk as read, and only the requested bytes are read."""
    reader = Reader(DATA, chunk=16)
    response, _ = await serve(headers={"range": "bytes=100-299"}, reader=reader)
    assert reader.calls == [(100, 200)]
    assert len(response.body_messages) == 200 // 16 + 1
    assert max(len(m) for m in response.body_messages) <= 16
    assert response.body == DATA[100:300]


async def test_multipart_reads_only_the_ranges() -> None:
    """Multipart asks the reader for each coalesced range once, nothing else."""
    reader = Reader(DATA)
    await serve(headers={"range": "bytes=0-9,5-14,500-"}, reader=reader)
    assert reader.calls == [(0, 15), (500, 524)]


async def test_short_reader_is_a_storage_error() -> None:
    """A reader that yields fewer bytes than asked breaks Content-Length: StorageError."""

    async def short(offset: int, length: int) -> AsyncIterator[bytes]:
        yield DATA[offset : offset + length - 1]

    with pytest.raises(StorageError):
        await serve(headers={"range": "bytes=0-9"}, reader=short)


async def test_long_reader_is_a_storage_error() -> None:
    """A reader that yields more bytes than asked is a StorageError, not an over-long body."""
    closed = []

    async def long(offset: int, length: int) -> AsyncIterator[bytes]:
        try:
            yield DATA[offset : offset + length]
            yield b"x"
        finally:
            closed.append(True)

    with pytest.raises(StorageError):
        await serve(headers={"range": "bytes=0-9"}, reader=long)
    assert closed == [True], "the reader is closed when serving stops early"


# --- property ----------------------------------------------------------------------------------


@st.composite
def range_requests(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int | None, str]], str]:
    """File content (0–5000 bytes) and up to 16 valid range-specs (first, last, rendered)."""
    data = draw(st.binary(max_size=5000))
    size = len(data)
    number = st.integers(0, size + 10)
    specs: list[tuple[int, int | None, str]] = []
    for _ in range(draw(st.integers(1, 16))):
        kind = draw(st.sampled_from(["int", "open", "suffix"]))
        if kind == "suffix":
            n = draw(number)
            specs.append((-1, n, f"-{n}"))
        else:
            first = draw(number)
            if kind == "open":
                specs.append((first, None, f"{first}-"))
            else:
                last = first + draw(number)
                specs.append((first, last, f"{first}-{last}"))
    return data, specs, "bytes=" + ", ".join(s for _, _, s in specs)


def wanted_offsets(specs: list[tuple[int, int | None, str]], size: int) -> set[int]:
    """The byte offsets RFC 9110 §14.1.2 selects."""
    offsets: set[int] = set()
    for first, second, _ in specs:
        if first == -1:
            assert second is not None
            if second > 0:
                offsets.update(range(max(0, size - second), size))
        elif first < size:
            last = size - 1 if second is None else min(second, size - 1)
            offsets.update(range(first, last + 1))
    return offsets


@settings(deadline=None, max_examples=200)
@given(range_requests(), st.integers(1, 700), st.booleans())
def test_property_body_holds_exactly_the_right_bytes(
    request: tuple[bytes, list[tuple[int, int | None, str]], str], chunk: int, send_range: bool
) -> None:
    """For any file and valid range set, the 200/206 body carries exactly the file's bytes."""
    data, specs, header = request
    size = len(data)
    headers = {"range": header} if send_range else {}
    response, served = asyncio.run(serve(headers=headers, data=data, reader=Reader(data, chunk)))
    if not send_range:
        assert response.status == 200 and response.body == data
        return
    wanted = wanted_offsets(specs, size)
    if not wanted:
        assert response.status == 416
        assert response.header("content-range") == f"bytes */{size}"
        return
    assert response.status == 206
    content_type = response.header("content-type")
    assert content_type is not None
    if content_type == "audio/wav":
        a, b, length = content_range(response.header("content-range"))
        parts = [((a, b, length), response.body)]
    else:
        assert response.header("content-range") is None
        parts = [
            (content_range(h["content-range"]), body)
            for h, body in parse_multipart(response.body, boundary_of(content_type))
        ]
        assert len(parts) >= 2, "never multipart for one range"
    got: set[int] = set()
    previous_end = -2
    for (a, b, length), body in parts:
        assert length == size
        assert previous_end + 1 < a <= b < size, "parts sorted, disjoint, in bounds"
        assert body == data[a : b + 1]
        got.update(range(a, b + 1))
        previous_end = b
    assert got == wanted
    assert served.ranges == [(a, b) for (a, b, _), _ in parts]
