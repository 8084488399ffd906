"""What a resumable download keeps between runs, and how each ranged answer is read; shared by
the sync and async clients, no network I/O here.

Beside the target ``NAME`` a download writes ``NAME.part`` (the bytes so far) and
``NAME.part.json`` (whose bytes they are: the source and the strong ETag they came with). A later
run, even in another process after a crash, sends ``Range: bytes=<size of .part>-`` with
``If-Range: <that ETag>``: the server answers 206 with the rest if the file is unchanged, or 200
with the whole file if not (then the ``.part`` starts over). The sha256 is checked over the whole
file at the end, so bytes left damaged by a crash are caught, never renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from tapevault.client.errors import ClientError, IntegrityError, ProtocolError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, the sha256 still catches a mix-up
    fcntl = None  # type: ignore[assignment]

# One request asks for at most this much: an expired URL is noticed (and replaced) at the next
# chunk rather than only after the connection breaks, and each answer is bounded.
CHUNK_BYTES = 8 * 1024 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d{1,18})-(\d{1,18})/(\d{1,18})$")
# A strong entity tag (RFC 9110 §8.8.3): quoted etagc characters, no W/ (If-Range needs one).
_STRONG_ETAG = re.compile(r'^"[\x21\x23-\x7e]{1,200}"$')

Progress = Callable[[int, int | None], None]
"""Called with (bytes on disk, total bytes or None while unknown) as a download advances."""


@dataclass(frozen=True)
class Source:
    """What to download: ``fresh_url()`` gives a URL to it (called again when one expires),
    with ``headers`` (credentials for an API route; none for a signed URL). ``sha256`` and
    ``size``, when known, are checked at the end; ``key`` names the recording in the ``.part``
    file's companion, so a ``.part`` of something else is never continued."""

    key: str
    sha256: str | None = None
    size: int | None = None
    headers: tuple[tuple[str, str], ...] = ()


class PartFile:
    """``NAME.part`` and ``NAME.part.json`` for a target ``NAME``; held under an exclusive
    ``flock`` while a download runs, so a second run into the same file is refused rather than
    interleaved (the kernel drops the lock when its process dies: a killed run never blocks
    the next). Use as a context manager."""

    def __init__(self, target: Path, source: Source) -> None:
        self.target = target
        self.source = source
        self.part = target.with_name(target.name + ".part")
        self.meta = target.with_name(target.name + ".part.json")
        self.etag: str | None = None
        self._lock: BinaryIO | None = None

    def __enter__(self) -> PartFile:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._lock = self.part.open("ab")
        if fcntl is not None:
            try:
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock.close()
                self._lock = None
                raise ClientError(f"{self.target} is being downloaded by another run") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def verified(self) -> bool:
        """The target is already there and is the recording (its sha256 known and matching):
        nothing to fetch."""
        if not self.source.sha256 or not self.target.is_file():
            return False
        if self.source.size is not None and self.target.stat().st_size != self.source.size:
            return False
        return sha256_of(self.target) == self.source.sha256.lower()

    def resume(self) -> int:
        """Bytes already downloaded that can be continued (0 if none, or not this source's)."""
        try:
            meta = json.loads(self.meta.read_text())
            size = self.part.stat().st_size
        except (OSError, ValueError):
            self.reset()
            return 0
        etag = meta.get("etag") if isinstance(meta, dict) else None
        if meta.get("key") != self.source.key or not _strong(etag):
            self.reset()
            return 0
        self.etag = etag
        return size

    def reset(self) -> None:
        """Start over: an empty ``.part``, no ETag."""
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.etag = None
        with contextlib.suppress(FileNotFoundError):
            self.meta.unlink()
        with self.part.open("r+b") as f:  # the same file (and lock), emptied
            f.truncate(0)

    def remember(self, etag: str | None) -> None:
        """Note whose bytes the ``.part`` holds, before writing any of them."""
        if etag == self.etag:
            return
        self.etag = etag
        tmp = self.meta.with_name(self.meta.name + ".tmp")
        tmp.write_text(json.dumps({"key": self.source.key, "etag": etag}))
        os.replace(tmp, self.meta)

    def open_at(self, offset: int) -> BinaryIO:
        f = self.part.open("r+b")
        f.truncate(offset)
        f.seek(offset)
        return f

    def finish(self, total: int) -> Path:
        """Check size and sha256, then move the ``.part`` into place; on a mismatch remove it
        (the next run starts afresh) and raise ``IntegrityError``."""
        size = self.part.stat().st_size
        expected_size = self.source.size if self.source.size is not None else total
        with self.part.open("rb") as f:
            os.fsync(f.fileno())  # on disk before it is renamed into place
        digest = sha256_of(self.part)
        problem = None
        if size != expected_size:
            problem = f"{size} bytes received, {expected_size} expected"
        elif self.source.sha256 and digest != self.source.sha256.lower():
            problem = f"sha256 {digest}, the recording's is {self.source.sha256}"
        if problem:
            self.discard()
            raise IntegrityError(f"{self.target.name}: {problem}; the partial file was removed")
        os.replace(self.part, self.target)
        with contextlib.suppress(FileNotFoundError):
            self.meta.unlink()
        return self.target

    def discard(self) -> None:
        for path in (self.part, self.meta):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _strong(etag: object) -> bool:
    """If-Range needs a strong validator (RFC 9110 §13.1.5); anything else (a weak tag, or a
    ``.part.json`` edited into a header injection) is not used."""
    return isinstance(etag, str) and _STRONG_ETAG.match(etag) is not None


def range_headers(offset: int, etag: str | None, chunk: int) -> dict[str, str]:
    """The next chunk's request headers. With bytes already on disk, ``If-Range`` makes the
    server send the whole file instead if it is no longer the same."""
    headers = {"range": f"bytes={offset}-{offset + chunk - 1}", "accept-encoding": "identity"}
    if offset and etag:
        headers["if-range"] = etag
    return headers


@dataclass(frozen=True)
class Answer:
    """How to take a successful answer: write its body from ``start``; the file is ``total``
    bytes long (None if the server did not say); ``etag`` validates them."""

    start: int
    total: int | None
    etag: str | None


def read_answer(response: httpx.Response, offset: int) -> Answer:
    """A 206 continues at ``offset`` (its Content-Range must say so); a 200 is the whole file
    (the file changed, or the server ignored Range): start over."""
    etag = response.headers.get("etag")
    etag = etag if _strong(etag) else None
    if response.status_code == 200:
        length = response.headers.get("content-length")
        return Answer(0, int(length) if length and length.isdigit() else None, etag)
    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
    if response.status_code != 206 or not match:
        raise ProtocolError(
            f"unexpected answer to a range request: {response.status_code} "
            f"Content-Range {response.headers.get('content-range')!r}"
        )
    first, last, total = (int(g) for g in match.groups())
    if first != offset or last < first or last >= total:
        raise ProtocolError(f"asked from byte {offset}, got bytes {first}-{last}/{total}")
    return Answer(first, total, etag)


def check_not_past(written: int, total: int | None) -> None:
    """A server that sends more than the file holds is not believed (and cannot fill a disk)."""
    if total is not None and written > total:
        raise ProtocolError(f"the server sent more than the {total} bytes it announced")


@dataclass
class Progressing:
    """Where a download stands: ``offset`` bytes in the ``.part`` of ``total`` (None: not
    known yet). The rules for moving it are here, the I/O in the clients."""

    offset: int
    total: int | None
    done: bool = False

    def take(self, answer: Answer, part: PartFile) -> None:
        """A 2xx is about to be written: a 200 starts the ``.part`` over."""
        if answer.start < self.offset:
            part.reset()
        self.offset, self.total = answer.start, answer.total
        part.remember(answer.etag)

    def wrote(self, n: int) -> None:
        self.offset += n
        check_not_past(self.offset, self.total)

    def body_ended(self, wrote_any: bool) -> None:
        if self.total is None:
            self.total = self.offset  # a whole file without a length: it ended
        elif not wrote_any and self.offset < self.total:
            raise ProtocolError("an empty answer to a range request")
        self.done = self.offset >= self.total

    def unsatisfiable(self, size: int | None, part: PartFile) -> bool:
        """A 416 (asked from past the end): done if the ``.part`` is exactly the file, else
        start over. False when the 416 does not say the size (an error then)."""
        if size is None:
            return False
        if size == self.offset:
            self.total, self.done = size, True
        else:
            part.reset()
            self.offset, self.total = 0, None
        return True
