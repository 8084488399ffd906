"""RFC 6455 framing for the server side of a connection, sans I/O.

``FrameReader`` turns the bytes a client sends into whole messages and control frames; the
``*_frame`` functions build what the server sends. It exists for the live-stream fast path
(``tapevault.http.wsdirect``): websockets' own parser is written as generators over a
``StreamReader`` and, per 640-byte audio frame, cost about as much as everything else the
server does with the frame. The common case here is one complete frame per socket read, which
this reader parses with a few index operations and one C call to unmask.

What it enforces, each a close code for the caller to send (``ProtocolViolation``):
client frames masked, reserved bits clear (no extension is ever negotiated on this path), known
opcodes, control frames final and at most 125 bytes, continuation frames only inside a
fragmented message and no new message inside one (1002); messages no larger than ``max_size``
(1009, checked from the header, before the payload is buffered); text and close reasons valid
UTF-8 (1007); close codes that may be sent on the wire (1002).
"""

from __future__ import annotations

from collections.abc import Callable

try:  # websockets' C helper; the pure-Python one is the same function, slower
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its compiled extension
    from websockets.utils import apply_mask

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = frozenset((CONTINUATION, TEXT, BINARY))
_CONTROL = frozenset((CLOSE, PING, PONG))
# Close codes an endpoint may send (RFC 6455 §7.4, IANA registry); 3000-4999 are for
# libraries and applications.
_SENDABLE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))
NO_STATUS = 1005  # what a close frame without a code means (never sent)


class ProtocolViolation(Exception):
    """The peer broke RFC 6455 (or a limit): close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class FrameReader:
    """Feeds on client bytes; calls ``on_binary`` / ``on_text`` with each whole message and
    ``on_control`` with each ping, pong and close frame (opcode, unmasked payload).

    Callbacks run inside ``feed``; one that ends the connection should make its handler ignore
    what follows (the rest of the bytes already read are still parsed, so a close frame behind
    them is seen). After a ``ProtocolViolation`` the reader must not be fed again.
    """

    __slots__ = (
        "_buffer",
        "_fragments",
        "_kind",
        "_size",
        "max_size",
        "on_binary",
        "on_control",
        "on_text",
    )

    def __init__(
        self,
        max_size: int,
        on_binary: Callable[[bytes], None],
        on_text: Callable[[str], None],
        on_control: Callable[[int, bytes], None],
    ) -> None:
        self.max_size = max_size
        self.on_binary = on_binary
        self.on_text = on_text
        self.on_control = on_control
        # An incomplete frame from earlier reads; a bytearray, so that a large message arriving
        # in many reads is gathered in amortised linear time, not copied again on every read.
        self._buffer = bytearray()
        self._kind = 0  # TEXT or BINARY while a fragmented message is open, else 0
        self._fragments: list[bytes] = []
        self._size = 0  # bytes in _fragments

    def close(self) -> None:
        """Drop the buffers and the callbacks (the connection is gone); feed no more."""
        self._buffer = bytearray()
        self._fragments = []
        self._size = self._kind = 0
        self.on_binary = self.on_text = _dropped
        self.on_control = _dropped_control

    def feed(self, data: bytes | bytearray) -> None:
        if self._buffer:
            self._buffer += data
            data, self._buffer = self._buffer, bytearray()
        end = len(data)
        pos = 0
        while end - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            length = second & 0x7F
            head = pos + 2
            if length == 126:
                if end - head < 2:
                    break
                length = int.from_bytes(data[head : head + 2], "big")
                head += 2
            elif length == 127:
                if end - head < 8:
                    break
                length = int.from_bytes(data[head : head + 8], "big")
                head += 8
            opcode = first & 0x0F
            self._check(first, second, opcode, length)
            start = head + 4
            stop = start + length
            if stop > end:
                break
            payload = apply_mask(data[start:stop], data[head:start]) if length else b""
            pos = stop
            if opcode == BINARY and first & 0x80 and not self._kind:
                self.on_binary(payload)  # the hot path: one whole binary message
            elif opcode in _CONTROL:
                self._control(opcode, payload)
            else:
                self._data(opcode, bool(first & 0x80), payload)
        if pos < end:
            self._buffer = bytearray(data[pos:]) if pos or isinstance(data, bytes) else data

    def _check(self, first: int, second: int, opcode: int, length: int) -> None:
        """Everything the header alone can violate, so nothing oversized is ever buffered."""
        if not second & 0x80:
            raise ProtocolViolation(1002, "client frames must be masked")
        if first & 0x70:
            raise ProtocolViolation(1002, "reserved bits set; no extension was negotiated")
        if opcode in _CONTROL:
            if not first & 0x80:
                raise ProtocolViolation(1002, "fragmented control frame")
            if length > 125:
                raise ProtocolViolation(1002, "control frame payload over 125 bytes")
        elif opcode not in _DATA:
            raise ProtocolViolation(1002, f"unknown opcode {opcode}")
        elif length > self.max_size - self._size:
            raise ProtocolViolation(1009, f"message over {self.max_size} bytes")

    def _data(self, opcode: int, final: bool, payload: bytes) -> None:
        if opcode == CONTINUATION:
            if not self._kind:
                raise ProtocolViolation(1002, "continuation frame outside a message")
            self._fragments.append(payload)
            self._size += len(payload)
            if not final:
                return
            kind, payload = self._kind, b"".join(self._fragments)
            self._kind, self._fragments, self._size = 0, [], 0
        elif self._kind:
            raise ProtocolViolation(1002, "new message inside a fragmented one")
        elif not final:
            self._kind, self._fragments, self._size = opcode, [payload], len(payload)
            return
        else:
            kind = opcode
        if kind == BINARY:
            self.on_binary(payload)
        else:
            self.on_text(_utf8(payload))

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == CLOSE:
            parse_close(payload)  # validates; the handler parses it again if it cares
        self.on_control(opcode, payload)


def parse_close(payload: bytes) -> tuple[int, str]:
    """(code, reason) of a received close frame; ``NO_STATUS`` when it carries no code."""
    if not payload:
        return NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolViolation(1002, "close frame of one byte")
    code = int.from_bytes(payload[:2], "big")
    if code not in _SENDABLE and not 3000 <= code < 5000:
        raise ProtocolViolation(1002, f"invalid close code {code}")
    return code, _utf8(payload[2:])


def _utf8(payload: bytes) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError:
        raise ProtocolViolation(1007, "text is not valid UTF-8") from None


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (servers never mask)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 1 << 16:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def close_frame(code: int, reason: str) -> bytes:
    """A close frame; the reason is cut to fit the 125-byte limit on a character boundary."""
    encoded = reason.encode()[:123].decode(errors="ignore").encode()
    return server_frame(CLOSE, code.to_bytes(2, "big") + encoded)


def _dropped(_: object) -> None:
    pass


def _dropped_control(_: int, __: bytes) -> None:
    pass
