"""Serve one immutable representation over raw ASGI, with RFC 9110 ranges and preconditions.

The byte-serving heart of the media gateway. :func:`send_representation` answers a GET or HEAD
that the caller has already authorised and resolved to a :class:`Representation` and a
:data:`RangeReader`; it returns what it did as :class:`Served`, for the access log.

The order is the one of RFC 9110 §13.2.2: preconditions (→ 304 or 412), then If-Range (§13.1.5),
then Range (§14.2) only when the answer would otherwise be 200. HEAD answers with exactly the
status and header fields the matching GET would (§9.3.2), Range included, and no body.

This is the hot path, so: header lists are bytes built from precomputed constants, nothing is
compiled per call, the body is streamed chunk by chunk from ``read`` (never a whole range in
memory) and the last chunk of a body carries ``more_body: False`` instead of an extra message.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from tapevault.core.ranges import (
    ByteRange,
    RangeDecision,
    Satisfiable,
    Unsatisfiable,
    Whole,
    parse_range,
)
from tapevault.errors import StorageError
from tapevault.http.conditional import evaluate_preconditions, http_date, if_range_allows

__all__ = [
    "RangeReader",
    "Representation",
    "Send",
    "Served",
    "send_representation",
    "validators",
]

RangeReader: TypeAlias = Callable[[int, int], AsyncIterator[bytes]]
"""``read(offset, length)`` yields exactly ``length`` bytes from ``offset``, in bounded chunks."""

Send: TypeAlias = Callable[[MutableMapping[str, Any]], Awaitable[None]]
"""The ASGI ``send`` callable."""


@dataclass(frozen=True, slots=True)
class Representation:
    """The selected representation: its length, validators and media type."""

    size: int
    etag: str  # strong, quotes included: '"abc"'
    last_modified: int  # Unix seconds
    content_type: str


@dataclass(slots=True)
class Served:
    """What one response was, for the access log.

    ``ranges`` are the inclusive byte ranges the response selects ([(0, size-1)] for a full 200,
    empty for 304/412/416 and an empty file); for HEAD they are what the matching GET would send,
    and when the client went away mid-body, only what it was sent.
    ``bytes_sent`` counts body octets actually sent (multipart framing and error bodies included;
    0 for HEAD and 304).
    """

    status: int
    ranges: list[tuple[int, int]] = field(default_factory=list)
    bytes_sent: int = 0


Progress = Callable[[int, int, int], None]
"""``progress(body_bytes, data_offset, data_length)``: a body chunk was handed to the server."""

_START = "http.response.start"
_BODY = "http.response.body"
_ACCEPT_RANGES = (b"accept-ranges", b"bytes")
_CACHE_CONTROL = (b"cache-control", b"private, no-store")
_JSON = (b"content-type", b"application/json")
_ALLOW = (b"allow", b"GET, HEAD")
_CRLF = b"\r\n"
ERROR_BODIES: Mapping[int, bytes] = {
    405: b'{"code":405,"message":"Method not allowed; use GET or HEAD."}',
    412: b'{"code":412,"message":"Precondition failed."}',
    416: b'{"code":416,"message":"Range not satisfiable."}',
}
"""The JSON bodies of 405, 412 and 416, in tapevault's shape; a dialect may pass its own."""
_WHOLE = Whole()


def _end() -> dict[str, Any]:
    """A fresh empty final body message (servers may keep or alter the dicts they get)."""
    return {"type": _BODY, "body": b"", "more_body": False}


def validators(rep: Representation) -> list[tuple[bytes, bytes]]:
    """ETag and Last-Modified of ``rep``, as every answer about it sends them."""
    return [
        (b"etag", rep.etag.encode("latin-1")),
        (b"last-modified", http_date(rep.last_modified).encode("ascii")),
    ]


def _content_length(n: int) -> tuple[bytes, bytes]:
    return (b"content-length", b"%d" % n)


async def _send_error(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    is_head: bool,
) -> Served:
    headers += [_JSON, _content_length(len(body))]
    await send({"type": _START, "status": status, "headers": headers})
    if is_head:
        await send(_end())
        return Served(status)
    await send({"type": _BODY, "body": body, "more_body": False})
    return Served(status, [], len(body))


async def open_reader(read: RangeReader, offset: int, length: int) -> AsyncIterator[bytes]:
    """``read(offset, length)`` with its first chunk already fetched.

    Called before the status line is sent: a store that is down (``StoreUnavailable``) or an
    object that is missing then fails the request with a proper answer (503) instead of a 200
    whose body is cut short. For the local store that is one ``pread`` done a little earlier."""
    chunks = read(offset, length)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        return _chained(b"", chunks)
    except BaseException:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
        raise
    return _chained(first, chunks)


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


async def _stream(
    send: Send,
    chunks: AsyncIterator[bytes],
    offset: int,
    length: int,
    *,
    last: bool,
    gone: Callable[[], bool] | None = None,
    progress: Progress | None = None,
) -> int:
    """Send the ``length`` bytes from ``offset`` that ``chunks`` yields; the final chunk ends
    the body if ``last``.

    Returns the bytes handed to the server. When ``gone()`` says the client disconnected, it
    stops reading at once: a player that seeks away from a ``bytes=0-`` request would otherwise
    have the rest of a multi-gigabyte file read from disk for nobody (servers drop writes to a
    closed connection silently), and the access log would count bytes nobody received.
    """
    remaining = length
    sent = 0
    pending = b""
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            remaining -= len(chunk)
            if remaining < 0:
                raise StorageError(f"reader returned over {length} bytes from offset {offset}")
            if pending:
                if gone is not None and gone():
                    return sent
                await send({"type": _BODY, "body": pending, "more_body": True})
                if progress is not None:
                    progress(len(pending), offset + sent, len(pending))
                sent += len(pending)
            pending = chunk
    finally:
        # Close the reader now (it may hold a file) when the client went away mid-range.
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    if remaining:
        raise StorageError(f"reader returned {length - remaining} of {length} bytes at {offset}")
    if pending or last:
        # No disconnect check before the last chunk: a one-chunk body (a 64 KiB seek) should
        # not pay for a watcher, and a last chunk costs no more disk reads anyway.
        await send({"type": _BODY, "body": pending, "more_body": not last})
        if progress is not None and pending:
            progress(len(pending), offset + sent, len(pending))
        sent += len(pending)
    return sent


async def send_representation(
    send: Send,
    *,
    method: str,
    headers: Mapping[str, str],
    rep: Representation,
    read: RangeReader,
    extra_headers: list[tuple[bytes, bytes]],
    max_ranges: int = 16,
    gone: Callable[[], bool] | None = None,
    error_bodies: Mapping[int, bytes] = ERROR_BODIES,
    progress: Progress | None = None,
) -> Served:
    """Answer a GET or HEAD for ``rep`` on ``send``: 200, 206, 304, 412 or 416.

    ``headers`` maps lower-cased request header names to values. ``extra_headers`` (CORS,
    Content-Disposition...) are added to every response. Any other method gets 405.
    Raises :class:`StorageError` if ``read`` yields more or fewer bytes than asked for; the
    response head is already sent by then, so the server must drop the connection. A single
    range (or the whole) is opened before the head is sent, so a reader that fails at once
    (a store that is down) raises with nothing sent.
    ``progress(body_bytes, data_offset, data_length)`` (optional) hears of each body chunk of
    the representation's bytes as it is handed to the server (multipart framing with length 0).
    """
    is_head = method == "HEAD"
    if not is_head and method != "GET":
        return await _send_error(
            send, 405, error_bodies[405], [_ALLOW, _CACHE_CONTROL, *extra_headers], is_head=False
        )

    status = evaluate_preconditions(method, headers, rep.etag, rep.last_modified)
    if status == 304:
        # §15.4.5: the fields a 200 would carry to update caches; no Content-Length, since
        # §8.6 would require the 200's length and ASGI servers expect that many body bytes.
        response = [*validators(rep), _CACHE_CONTROL, *extra_headers]
        await send({"type": _START, "status": 304, "headers": response})
        await send(_end())
        return Served(304)

    base = [_ACCEPT_RANGES, *validators(rep), _CACHE_CONTROL, *extra_headers]
    if status == 412:
        return await _send_error(send, 412, error_bodies[412], base, is_head)

    size = rep.size
    range_header = headers.get("range")
    decision: RangeDecision = _WHOLE
    if range_header is not None:
        if_range = headers.get("if-range")
        if if_range is None or if_range_allows(if_range, rep.etag, rep.last_modified):
            decision = parse_range(range_header, size, max_ranges=max_ranges)

    if isinstance(decision, Unsatisfiable):
        base.append((b"content-range", b"bytes */%d" % size))
        return await _send_error(send, 416, error_bodies[416], base, is_head)

    content_type = rep.content_type.encode("latin-1")
    if isinstance(decision, Whole):
        base += [(b"content-type", content_type), _content_length(size)]
        chunks = None if is_head or not size else await open_reader(read, 0, size)
        await send({"type": _START, "status": 200, "headers": base})
        served = Served(200, [(0, size - 1)] if size else [], 0)
        if chunks is None:
            await send(_end())
        else:
            sent = await _stream(send, chunks, 0, size, last=True, gone=gone, progress=progress)
            served.bytes_sent = sent
            served.ranges = [(0, sent - 1)] if sent else []
        return served

    assert isinstance(decision, Satisfiable)
    ranges = decision.ranges
    if len(ranges) == 1:
        byte_range = ranges[0]
        start, end = byte_range.start, byte_range.end
        base += [
            (b"content-type", content_type),
            (b"content-range", b"bytes %d-%d/%d" % (start, end, size)),
            _content_length(end - start + 1),
        ]
        chunks = None if is_head else await open_reader(read, start, end - start + 1)
        await send({"type": _START, "status": 206, "headers": base})
        served = Served(206, [(start, end)], 0)
        if chunks is None:
            await send(_end())
        else:
            sent = await _stream(
                send, chunks, start, end - start + 1, last=True, gone=gone, progress=progress
            )
            served.bytes_sent = sent
            served.ranges = [(start, start + sent - 1)] if sent else []
        return served

    return await _send_multipart(
        send, ranges, base, content_type, size, read, is_head, gone, progress
    )


async def _send_multipart(
    send: Send,
    ranges: tuple[ByteRange, ...],
    base: list[tuple[bytes, bytes]],
    content_type: bytes,
    size: int,
    read: RangeReader,
    is_head: bool,
    gone: Callable[[], bool] | None = None,
    progress: Progress | None = None,
) -> Served:
    """A ``multipart/byteranges`` 206 (§14.6) with its exact Content-Length known up front.

    If the client goes away, what it did receive is counted, by range, as precisely as chunks
    allow; framing bytes count as sent once handed over."""
    boundary = secrets.token_hex(16).encode("ascii")
    # Each part: "--B CRLF headers CRLF CRLF data CRLF"; the CRLF after the data belongs to the
    # next delimiter (RFC 2046 §5.1.1), so the data bytes are exactly the range.
    heads = [
        b"--%s\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n"
        % (boundary, content_type, r.start, r.end, size)
        for r in ranges
    ]
    closing = b"--%s--\r\n" % boundary
    total = sum(len(h) + r.length + 2 for h, r in zip(heads, ranges, strict=True)) + len(closing)
    base += [
        (b"content-type", b"multipart/byteranges; boundary=" + boundary),
        _content_length(total),
    ]
    await send({"type": _START, "status": 206, "headers": base})
    served = Served(206, [(r.start, r.end) for r in ranges], 0)
    if is_head:
        await send(_end())
        return served
    # Coalesce each delimiter with the CRLF before it: one message between two ranges.
    separators = [heads[0], *(_CRLF + h for h in heads[1:]), _CRLF + closing]
    delivered: list[tuple[int, int]] = []
    for i, r in enumerate(ranges):
        await send({"type": _BODY, "body": separators[i], "more_body": True})
        served.bytes_sent += len(separators[i])
        if progress is not None:
            progress(len(separators[i]), 0, 0)
        sent = await _stream(
            send,
            read(r.start, r.length),
            r.start,
            r.length,
            last=False,
            gone=gone,
            progress=progress,
        )
        served.bytes_sent += sent
        if sent:
            delivered.append((r.start, r.start + sent - 1))
        if sent < r.length:
            served.ranges = delivered
            return served
    await send({"type": _BODY, "body": separators[-1], "more_body": False})
    served.bytes_sent = total
    return served
