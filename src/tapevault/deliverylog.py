"""nginx's delivery log, read as it grows: what nginx really sent for each handed-off response.

The shipped site (``deploy/nginx/tapevault.conf``) writes one JSON line per request served from
its internal location, when nginx has finished it (``access_log`` runs in nginx's log phase)::

    {"d":"<delivery id>","s":"206","b":"65536","r":"bytes 0-65535/1048620"}

``d`` is the ``X-Tapevault-Delivery`` header tapevault put on its answer, ``s`` the status nginx
sent, ``b`` ``$body_bytes_sent`` (what a client that went away mid-range did get), ``r`` the
``Content-Range`` nginx sent. Each line goes to ``core.handoff.Handoffs.report``.

One thread per process polls the file (``TAPEVAULT_ACCEL_LOG``) every ``poll_seconds``; every
process reads every line and takes only its own. It starts at the end of the file (earlier lines
belong to processes that are gone, whose playbacks the next start sealed), follows a rotation
(a new file under the name: the old one is still drained for ``DRAIN_SECONDS``, while nginx has
not reopened its log yet) and a truncation (``copytruncate``: read again from the start).

While the file cannot be opened, :attr:`ready` is False and tapevault sends the bytes itself:
a response is never handed off without a way to learn what was sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tapevault.core.handoff import Handoffs, Report

log = logging.getLogger("tapevault.deliverylog")

POLL_SECONDS = 0.05
DRAIN_SECONDS = 10.0  # an old file is still read this long after a rotation
READ_BYTES = 1 << 20
POLL_BYTES = 16 << 20  # read per poll and file at most (memory stays bounded; the rest next poll)
MAX_LINE = 4096  # nginx's lines are ~120 bytes; anything longer is not one of them
EXPIRE_SECONDS = 1.0
MAX_BODY = 1 << 62  # larger than any file; the audit store's integers hold it


def _number(value: object) -> int:
    """A field nginx writes as digits (``"206"``); a JSON number is taken too, a fraction not."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError("not digits")
    return int(value)


def parse_line(line: bytes) -> Report | None:
    """A delivery line as a ``Report``; None for anything else (garbled, cut, not ours)."""
    try:
        fields = orjson.loads(line)
        delivery_id = fields["d"]
        status = _number(fields["s"])
        body = _number(fields["b"])
        content_range = fields.get("r") or None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(delivery_id, str) or not delivery_id:
        return None
    if not 0 <= status <= 999 or not 0 <= body < MAX_BODY:  # no answer of nginx's
        return None
    if content_range is not None and not isinstance(content_range, str):
        return None
    return Report(delivery_id, status, body, content_range)


class _Tail:
    """One open file of the log and where reading stopped."""

    def __init__(self, fd: int, inode: int, position: int) -> None:
        self.fd = fd
        self.inode = inode
        self.position = position
        self.partial = b""
        self.until: float | None = None  # set once replaced by a newer file: drained till then

    def read_lines(self) -> list[bytes]:
        """The whole lines appended since the last call, up to ``POLL_BYTES`` of them."""
        lines: list[bytes] = []
        start = self.position
        while (room := POLL_BYTES - (self.position - start)) > 0:
            data = os.pread(self.fd, min(READ_BYTES, room), self.position)
            if not data:
                return lines
            self.position += len(data)
            data = self.partial + data
            *complete, self.partial = data.split(b"\n")
            lines += complete
            if len(self.partial) > MAX_LINE:
                self.partial = b""  # not a line of ours; skip to the next newline
                # (its tail, once the newline comes, fails to parse and is dropped)
        return lines

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class DeliveryLog:
    """Reads ``path`` on a daemon thread and reports each line to ``handoffs``."""

    def __init__(
        self,
        path: Path,
        handoffs: Handoffs,
        now_ms: Callable[[], int],
        *,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.path = path
        self.handoffs = handoffs
        self.now_ms = now_ms
        self.poll_seconds = poll_seconds
        self.reported = 0
        self.garbled = 0
        self._tails: list[_Tail] = []  # the current file last; older ones being drained
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    @property
    def ready(self) -> bool:
        """Whether the log is open: only then may a response be handed off."""
        tails = self._tails
        return bool(tails) and tails[-1].until is None

    def start(self) -> None:
        self._open(at_end=True)
        self._thread = threading.Thread(target=self._run, name="tapevault-deliverylog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.poll()  # what nginx finished before we stopped
        for tail in self._tails:
            tail.close()
        self._tails = []

    def _run(self) -> None:
        expired_at = time.monotonic()
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
                if time.monotonic() - expired_at >= EXPIRE_SECONDS:
                    expired_at = time.monotonic()
                    self.handoffs.expire(self.now_ms())
            except Exception:  # never let the reader die: hand-offs would wait for nothing
                log.exception("reading the delivery log %s failed", self.path)

    def poll(self) -> int:
        """Read what was appended, follow a rotation; the number of reports taken."""
        self._follow()
        taken = 0
        now = time.monotonic()
        for tail in list(self._tails):
            taken += self._take(tail.read_lines())
            if tail.until is not None and now >= tail.until:
                tail.close()  # drained: nginx has long reopened its log
                self._tails.remove(tail)
        return taken

    def _take(self, lines: list[bytes]) -> int:
        taken = 0
        owns = self.handoffs.owns
        for line in lines:
            if not line:
                continue
            report = parse_line(line)
            if report is None:
                self.garbled += 1
                continue
            if owns(report.delivery_id) and self.handoffs.report(report):
                taken += 1
        self.reported += taken
        return taken

    def _follow(self) -> None:
        """Notice a file that was rotated away (another inode under the name) or truncated."""
        try:
            st = os.stat(self.path)
        except OSError:
            return  # moved away and not yet recreated: keep draining what we hold
        current = self._tails[-1] if self._tails else None
        if current is None or current.until is not None:
            self._open(at_end=False)
        elif st.st_ino != current.inode:
            current.until = time.monotonic() + DRAIN_SECONDS
            self._open(at_end=False)
        elif st.st_size < current.position:
            current.position = 0  # truncated in place (copytruncate)
            current.partial = b""

    def _open(self, *, at_end: bool) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot read nginx's delivery log %s (%s): tapevault sends media itself "
                    "until it can",
                    self.path,
                    exc.strerror or exc,
                )
            return
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would be read forever
            os.close(fd)
            if not self._warned:
                self._warned = True
                log.warning("%s is not a regular file: tapevault sends media itself", self.path)
            return
        self._tails.append(_Tail(fd, st.st_ino, st.st_size if at_end else 0))
        if self._warned:
            log.warning("reading nginx's delivery log %s: handing media to nginx", self.path)
            self._warned = False
