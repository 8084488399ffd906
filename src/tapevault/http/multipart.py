"""An upload sent as a form: ``multipart/form-data`` holding one file part (RFC 7578).

``curl -F file=@visit.wav``, a browser's ``FormData`` and most HTTP libraries' ``files=`` send
audio this way, and refusing it with a 415 only made users guess. So an upload endpoint takes
either the audio as the whole body or a form whose only part is the audio: :func:`body_of`
returns the request's body as the spooler reads it, with the form's framing removed as it
streams (python-multipart's parser, which bounds header lines, header count and boundary
length), and the media type to check it against (the part's own ``Content-Type``).

Refused with a reason (400), before anything is kept: a form without a boundary, with no part or
a second part (what the second would be for is ambiguous: a server that kept one silently would
lose the other), one cut before its closing boundary, malformed framing, or more than 64 KiB of
framing around the audio. Any other ``multipart/*`` type is left to the media-type check (415).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from tapevault.errors import InvalidRequest
from tapevault.http.asgi import Message, Receive

FORM_DATA: Final = b"multipart/form-data"
MAX_FRAMING: Final = 64 << 10  # boundaries, part headers, preamble and epilogue together


class Body:
    """A request body as uploaded: ``receive`` yields its bytes, ``content_type`` says what
    they claim to be."""

    def __init__(self, receive: Receive, content_type: str | None) -> None:
        self.receive = receive
        self.content_type = content_type


class FormBody(Body):
    """The one file part of a ``multipart/form-data`` body; ``content_type`` is the part's,
    known once its headers have been read."""

    def __init__(self, receive: Receive, boundary: bytes) -> None:
        super().__init__(self._next, None)
        self._receive = receive
        self._pending: list[bytes] = []
        self._parts = 0
        self._ended = False
        self._finished = False
        self._raw = 0
        self._data = 0
        self._field = b""
        self._value = b""
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._on_part_begin,
                    "on_part_data": self._on_part_data,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_end": self._on_end,
                },
            )
        except FormParserError as exc:
            raise InvalidRequest(f"multipart/form-data: {exc}") from exc

    def _on_part_begin(self) -> None:
        self._parts += 1

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._parts == 1:
            self._pending.append(data[start:end])
            self._data += end - start

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        if self._parts == 1 and self._field.strip().lower() == b"content-type":
            self.content_type = self._value.strip().decode("latin-1")
        self._field, self._value = b"", b""

    def _on_end(self) -> None:
        self._ended = True

    async def _next(self) -> Message:
        while True:
            if self._pending:
                chunk = b"".join(self._pending)
                self._pending.clear()
                return {"type": "http.request", "body": chunk, "more_body": True}
            if self._finished:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return message
            chunk = message.get("body", b"")
            self._raw += len(chunk)
            try:
                self._parser.write(chunk)
            except FormParserError as exc:
                raise InvalidRequest(f"malformed multipart/form-data body: {exc}") from exc
            if self._parts > 1:
                raise InvalidRequest(
                    "a multipart/form-data upload takes one file part (the audio); "
                    "this one has more"
                )
            if self._raw - self._data > MAX_FRAMING:
                raise InvalidRequest(
                    f"malformed multipart/form-data body: over {MAX_FRAMING} bytes of framing"
                )
            if not message.get("more_body", False):
                if self._parts == 0:
                    raise InvalidRequest("the multipart/form-data body has no file part")
                if not self._ended:
                    raise InvalidRequest(
                        "the multipart/form-data body ends before its closing boundary"
                    )
                self._finished = True


def body_of(headers: Mapping[str, str], receive: Receive) -> Body:
    """The upload in a request: the whole body, or the file part of a form."""
    declared = headers.get("content-type")
    media_type, options = parse_options_header(declared)
    if media_type != FORM_DATA:
        return Body(receive, declared)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart/form-data needs a boundary parameter")
    return FormBody(receive, boundary)
