"""Request bodies: small ones drained, audio spooled to disk, checked, then accepted.

Shared by every dialect that takes audio (Suki uploads, Amigo call uploads, tus). A body is never
held in memory: it streams to a file in the spool directory with the size limit enforced as it
arrives; the file is probed (is it audio we read?) and handed to an ``accept`` callback, which
moves it into the vault. Whatever happens, the spool file is gone afterwards; one that a killed
process left is removed by the scratch sweep (``tapevault.ingest.scratch``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from tapevault.core.model import Recording
from tapevault.errors import InvalidRequest, PayloadTooLarge, TapevaultError
from tapevault.fsutil import out_of_space_as_507
from tapevault.http.asgi import Receive
from tapevault.http.context import AppContext
from tapevault.http.multipart import body_of
from tapevault.ingest import formats
from tapevault.numbers import is_digits
from tapevault.storage.node_local import ScratchWriter

Accept = Callable[[Path, str], Recording]
"""``accept(path, source_format)``: take a probed file into the vault (runs in a thread)."""


class ClientGone(TapevaultError):
    """The client disconnected before its body was complete."""


def check_declared_length(headers: Mapping[str, str], limit: int) -> None:
    """Refuse a body whose declared length is over the limit before reading any of it."""
    length = headers.get("content-length")
    if length is None:
        return
    if not is_digits(length):
        raise InvalidRequest("Content-Length is not a number.")
    if int(length) > limit:
        raise PayloadTooLarge(limit)


def declared_length(headers: Mapping[str, str]) -> int:
    """The body's declared length, or 0 when it is unknown (chunked) or malformed (refused by
    ``check_declared_length``)."""
    length = headers.get("content-length")
    return int(length) if length is not None and is_digits(length) else 0


async def drain(receive: Receive, limit: int) -> None:
    """Read and discard a small body (create/end take none); refuse a large one."""
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        seen += len(message.get("body", b""))
        if seen > limit:
            raise PayloadTooLarge(limit)
        if not message.get("more_body", False):
            return


async def read_small(receive: Receive, limit: int) -> bytes:
    """A small body (JSON requests), refused past ``limit``."""
    parts: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("client disconnected during the request")
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def spool(path: Path, receive: Receive, limit: int) -> None:
    """Stream the request body to the node-local file ``path`` (created), enforcing ``limit``
    as it arrives; a body that fails half-way leaves no file."""
    writer = ScratchWriter(path)
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone("client disconnected during upload")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
            with out_of_space_as_507("the upload"):
                writer.write(chunk)
            if not message.get("more_body", False):
                break
    except BaseException:
        writer.abort()
        raise
    writer.close()


async def accept_file(
    ctx: AppContext, path: Path, declared: str | None, accept: Accept
) -> Recording:
    """Probe a complete body on disk and take it into the vault (plain and tus uploads)."""
    max_seconds = ctx.settings.max_recording_seconds
    source_format = await ctx.blocking(formats.probe, path, declared, max_seconds)
    return await ctx.blocking(accept, path, source_format)


async def receive_upload(
    ctx: AppContext, receive: Receive, headers: Mapping[str, str], accept: Accept
) -> Recording:
    """Spool, probe and accept one upload body (the audio itself, or a form's one file part);
    the spool file never outlives the call."""
    check_declared_length(headers, ctx.settings.max_upload_bytes)
    body = body_of(headers, receive)
    with ctx.spool.reserve() as spooled:
        await spool(spooled, body.receive, ctx.settings.max_upload_bytes)
        return await accept_file(ctx, spooled, body.content_type, accept)
