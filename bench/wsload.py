"""A real-time WebSocket load generator: thousands of audio streams per process on raw sockets.

A Python WebSocket library costs tens of microseconds per message on the client side, which would
make the generator, not the server, the bottleneck at 50,000 frames a second. This one does the
HTTP Upgrade itself on a plain uvloop ``asyncio.Protocol`` and then only writes bytes: every
audio frame is one pre-built, pre-masked RFC 6455 client frame. RFC 6455 wants a fresh random
mask per frame; reusing one masked frame for every message is a benchmark shortcut (the server
unmasks every frame either way, so its cost is unchanged). It parses only what the server sends
back: ``{"type":"ack","bytes":N,...}`` text frames, pings (answered with a pong) and the close
frame.

The end: after ``seconds`` every stream is sent ``{"type":"end"}`` at once. Acks that arrive
from then on are timed separately (``end_latency``) and never count as late: hundreds of streams
ending within a millisecond is a burst of database work no deployment sees, not the steady state
being measured. The bytes they acknowledge still count: a final ack short of what was sent is loss.

Pacing: stream ``j`` belongs to one of ``K = period / tick`` phase buckets; every ``tick`` the
next bucket's streams each get one frame, so each stream sends one frame per ``period`` and the
load is spread evenly over the period, as independent callers would spread it. The time of every
tick is kept, so an ack of ``N`` bytes gives the latency of every frame it newly covers.

Run by the harness as ``python -m bench.wsload`` (one JSON line in on stdin: the configuration;
``ready`` out; one JSON line in: the start time on the shared ``time.monotonic`` clock, the
measurement window and a file for the result; ``done`` out once the result is written), or in
process through ``run``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import uvloop

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ACK_PREFIX = b'{"type":"ack","bytes":'
_END = b'{"type":"end"}'
_OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_BIN_MS = 10  # histogram bins per millisecond (0.1 ms resolution)
_HIST_BINS = 5000 * _BIN_MS  # up to 5 s; anything later lands in the last bin (max is exact)


def client_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    repeated = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )
    return head + mask + masked


def tone(frame_bytes: int, sample_rate: int = 16000, hz: float = 440.0) -> bytes:
    """``frame_bytes`` of a 16-bit mono sine: real-looking audio (it does not compress)."""
    samples = frame_bytes // 2
    return b"".join(
        int(8000 * math.sin(2 * math.pi * hz * i / sample_rate)).to_bytes(2, "little", signed=True)
        for i in range(samples)
    )


@dataclass
class Config:
    host: str
    port: int
    targets: list[str]  # one request target (path?query) per stream
    token: str | None
    frame_bytes: int  # audio bytes per frame
    period: float  # seconds of audio per frame
    seconds: float  # how long every stream sends
    tick: float = 0.002
    late_after: float = 0.2
    connect_concurrency: int = 64
    connect_timeout: float = 30.0
    close_timeout: float = 60.0
    phase_offset: int = 0  # this process's place among ``phase_stride`` generator processes
    phase_stride: int = 1


class _Hist:
    """Counts of seconds in 0.1 ms bins, with an exact maximum."""

    def __init__(self) -> None:
        self.bins = [0] * (_HIST_BINS + 1)
        self.max = 0.0
        self.count = 0

    def sparse(self) -> dict[str, Any]:
        return {
            "bins": {str(i): c for i, c in enumerate(self.bins) if c},
            "max": self.max,
            "count": self.count,
        }


def percentile(hist: dict[str, Any], q: float) -> float:
    """The ``q`` quantile (0..1) of a ``_Hist.sparse()`` histogram, in seconds (bin upper edge)."""
    total = hist["count"]
    if not total:
        return 0.0
    rank = math.ceil(q * total)
    seen = 0
    for key in sorted(hist["bins"], key=int):
        seen += hist["bins"][key]
        if seen >= rank:
            return min((int(key) + 1) / (_BIN_MS * 1000), hist["max"])
    return float(hist["max"])


def merge_hist(hists: list[dict[str, Any]]) -> dict[str, Any]:
    bins: Counter[str] = Counter()
    for h in hists:
        bins.update(h["bins"])
    return {
        "bins": dict(bins),
        "max": max((h["max"] for h in hists), default=0.0),
        "count": sum(h["count"] for h in hists),
    }


class Stream(asyncio.Protocol):
    """One WebSocket: handshake, then frames out and acks in."""

    def __init__(self, gen: Generator, index: int, target: str) -> None:
        self.gen = gen
        self.index = index
        self.bucket = (index * gen.cfg.phase_stride + gen.cfg.phase_offset) % gen.buckets
        self.target = target
        self.key = base64.b64encode(os.urandom(16))
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.opened: asyncio.Future[None] = gen.loop.create_future()
        self.done: asyncio.Future[None] = gen.loop.create_future()
        self.gone: asyncio.Future[None] = gen.loop.create_future()
        self.frames_sent = 0
        self.acked = 0
        self.acked_frames = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.error: str | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        cfg = self.gen.cfg
        lines = [
            f"GET {self.target} HTTP/1.1",
            f"Host: {cfg.host}:{cfg.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.key.decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if cfg.token:
            lines.append(f"sdp_suki_token: {cfg.token}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self._handshake(data)
            return
        # Fast path: one whole short unmasked text frame, which is what an ack is.
        if not self.buf and len(data) > 2 and data[0] == 0x81 and data[1] == len(data) - 2:
            self._text(data[2:])
            return
        self.buf += data
        self._frames()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None and self.close_code is None:
            self.error = f"connection lost: {exc!r}"
        elif self.close_code is None and self.error is None:
            self.error = "connection closed without a close frame"
        self.gen.lost(self)
        for fut in (self.opened, self.done, self.gone):
            if not fut.done():
                fut.set_result(None)

    # -- incoming --------------------------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 65536:
                self._fail("oversized handshake response")
            return
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        status = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self.key + _GUID).digest()).decode()  # noqa: S324
        if len(status) < 2 or status[1] != "101":
            self._fail(f"handshake answered {head[0]!r}")
            return
        if headers.get("sec-websocket-accept") != expected:
            self._fail("bad Sec-WebSocket-Accept")
            return
        self.upgraded = True
        if not self.opened.done():
            self.opened.set_result(None)
        if self.buf:
            self._frames()

    def _frames(self) -> None:
        buf = self.buf
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if b1 & 0x80:
                self._fail("the server masked a frame")
                return
            if n - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            opcode = b0 & 0x0F
            if opcode == _OP_TEXT:
                self._text(payload)
            elif opcode == _OP_PING:
                self._write(client_frame(_OP_PONG, payload, self.gen.mask))
            elif opcode == _OP_CLOSE:
                self._closed(payload)
                break
        del buf[:pos]

    def _text(self, payload: bytes) -> None:
        if payload.startswith(_ACK_PREFIX) and payload.endswith(b"}"):
            # {"type":"ack","bytes":N} from the floor, {"type":"ack","bytes":N,"stored":M} from
            # tapevault: the node-durable count is what is measured.
            n = int(payload[len(_ACK_PREFIX) : -1].split(b",", 1)[0])
        else:
            try:
                body = json.loads(payload)
            except ValueError:
                return
            if body.get("type") != "ack":
                return
            n = int(body["bytes"])
        if n < self.acked:
            self._fail(f"ack went backwards: {n} after {self.acked}")
            return
        self.acked = n
        self.gen.acked(self, n)

    def _closed(self, payload: bytes) -> None:
        self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        self.close_reason = payload[2:].decode("utf-8", "replace")
        # Echo the close; the server then closes the TCP connection (and keeps the TIME_WAIT).
        self._write(client_frame(_OP_CLOSE, payload[:2], self.gen.mask))
        if not self.done.done():
            self.done.set_result(None)

    # -- outgoing --------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
        if self.transport is not None:
            self.transport.abort()

    def end(self) -> None:
        self._write(self.gen.end_frame)


class Generator:
    def __init__(self, cfg: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.loop = loop
        self.buckets = max(1, round(cfg.period / cfg.tick))
        self.mask = os.urandom(4)
        self.frame = client_frame(_OP_BINARY, tone(cfg.frame_bytes), self.mask)
        self.end_frame = client_frame(_OP_TEXT, _END, self.mask)
        self.streams = [Stream(self, i, t) for i, t in enumerate(cfg.targets)]
        self.by_bucket: list[list[Stream]] = [[] for _ in range(self.buckets)]
        self.tick_times = array("d")
        self.latency = _Hist()
        self.lag = _Hist()
        self.late = 0
        self.start = 0.0
        # Once every stream has been sent ``end`` (all within one tick, a burst no deployment
        # sees), acks go to ``end_latency`` and are not judged late: the end is its own test.
        self.ending = False
        self.end_latency = _Hist()
        self.end_late = 0
        # The worst ack latency per second of the level (by send time), and late frames per second.
        self.worst: dict[int, float] = {}
        self.late_by_second: Counter[int] = Counter()
        self.window_frames = 0
        self.frames_sent = 0

    # -- callbacks from streams --------------------------------------------------------------

    def acked(self, stream: Stream, n: int) -> None:
        now = time.monotonic()
        k1 = n // self.cfg.frame_bytes
        k0 = stream.acked_frames
        if k1 <= k0:
            return
        if k1 > stream.frames_sent:
            stream._fail(f"ack of {n} bytes beyond the {stream.frames_sent} frames sent")
            return
        stream.acked_frames = k1
        ticks, step, first = self.tick_times, self.buckets, stream.bucket
        late_after, top = self.cfg.late_after, _HIST_BINS
        hist = self.end_latency if self.ending else self.latency
        bins = hist.bins
        for k in range(k0, k1):
            sent = ticks[first + k * step]
            lat = now - sent
            if lat > late_after:
                if self.ending:
                    self.end_late += 1
                else:
                    self.late += 1
                    self.late_by_second[int(sent - self.start)] += 1
            if lat > hist.max:
                hist.max = lat
            i = int(lat * 10000)
            bins[i if i < top else top] += 1
        hist.count += k1 - k0
        if self.ending:
            return
        second = int(ticks[first + k0 * step] - self.start)
        oldest = now - ticks[first + k0 * step]
        if oldest > self.worst.get(second, 0.0):
            self.worst[second] = oldest

    def lost(self, stream: Stream) -> None:
        with contextlib.suppress(ValueError):
            self.by_bucket[stream.bucket].remove(stream)

    # -- phases ------------------------------------------------------------------------------

    async def connect(self) -> None:
        gate = asyncio.Semaphore(self.cfg.connect_concurrency)

        async def one(stream: Stream) -> None:
            async with gate:
                try:
                    await asyncio.wait_for(
                        self.loop.create_connection(lambda: stream, self.cfg.host, self.cfg.port),
                        self.cfg.connect_timeout,
                    )
                    await asyncio.wait_for(asyncio.shield(stream.opened), self.cfg.connect_timeout)
                except (OSError, TimeoutError) as exc:
                    stream.error = stream.error or f"connect failed: {exc!r}"
                    if stream.transport is not None:
                        stream.transport.abort()
                    for fut in (stream.opened, stream.done, stream.gone):
                        if not fut.done():
                            fut.set_result(None)

        await asyncio.gather(*(one(s) for s in self.streams))
        for s in self.streams:
            if s.upgraded and s.error is None:
                self.by_bucket[s.bucket].append(s)

    async def pace(self, start: float, window: tuple[float, float]) -> None:
        """Send every stream's frames on schedule for ``seconds``, from ``start``."""
        cfg, k = self.cfg, self.buckets
        total = round(cfg.seconds / cfg.period) * k
        frame, ticks, by_bucket = self.frame, self.tick_times, self.by_bucket
        lag_bins, top = self.lag.bins, _HIST_BINS
        w0, w1 = window
        self.start = start
        for i in range(total):
            due = start + i * cfg.tick
            now = time.monotonic()
            if now < due:
                await asyncio.sleep(due - now)
                now = time.monotonic()
            lag = now - due if now > due else 0.0
            if lag > self.lag.max:
                self.lag.max = lag
            j = int(lag * 10000)
            lag_bins[j if j < top else top] += 1
            ticks.append(now)
            bucket = by_bucket[i % k]
            for s in bucket:
                s.transport.write(frame)  # type: ignore[union-attr]
                s.frames_sent += 1
            self.frames_sent += len(bucket)
            if w0 <= now < w1:
                self.window_frames += len(bucket)
        self.lag.count = total

    async def finish(self) -> None:
        self.ending = True
        for s in self.streams:
            if s.upgraded and s.error is None:
                s.end()
        pending = [s.done for s in self.streams if not s.done.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.cfg.close_timeout)
        for s in self.streams:
            if not s.done.done():
                s.error = s.error or f"no close within {self.cfg.close_timeout:.0f} s after end"
                if s.transport is not None:
                    s.transport.abort()
        # Let the server close the TCP connections it was asked to (bounded).
        open_ = [s.gone for s in self.streams if not s.gone.done()]
        if open_:
            await asyncio.wait(open_, timeout=5)
        for s in self.streams:
            if s.transport is not None and not s.transport.is_closing():
                s.transport.close()

    def result(self, connect_seconds: float) -> dict[str, Any]:
        fb = self.cfg.frame_bytes
        opened = [s for s in self.streams if s.upgraded]
        lost = [s for s in opened if s.acked != s.frames_sent * fb]
        codes = Counter(str(s.close_code) for s in opened)
        errors = Counter(s.error for s in self.streams if s.error)
        return {
            "streams": len(self.streams),
            "opened": len(opened),
            "connect_seconds": connect_seconds,
            "frames_sent": self.frames_sent,
            "window_frames": self.window_frames,
            "bytes_sent": sum(s.frames_sent for s in opened) * fb,
            "bytes_acked": sum(s.acked for s in opened),
            "lost_streams": len(lost),
            "lost_bytes": sum(s.frames_sent * fb - s.acked for s in lost),
            "close_codes": dict(codes),
            "errors": dict(errors.most_common(5)),
            "late_frames": self.late,
            "late_by_second": {str(k): v for k, v in sorted(self.late_by_second.items())},
            "worst_ms_by_second": {
                str(k): round(v * 1000, 1) for k, v in sorted(self.worst.items())
            },
            "latency": self.latency.sparse(),
            "end_latency": self.end_latency.sparse(),
            "end_late_frames": self.end_late,
            "lag": self.lag.sparse(),
        }


async def run(
    cfg: Config,
    wait_start: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Connect every stream, wait for the start (``wait_start`` returns ``(start, (w0, w1))``,
    possibly as an awaitable; default: now), send for ``cfg.seconds``, end and collect."""
    gen = Generator(cfg, asyncio.get_running_loop())
    t = time.monotonic()
    await gen.connect()
    connect_seconds = time.monotonic() - t
    if wait_start is None:
        start = time.monotonic() + 0.05
        window = (start, start + cfg.seconds)
    else:
        got = wait_start()
        if asyncio.iscoroutine(got) or isinstance(got, asyncio.Future):
            got = await got
        start, window = got
    await gen.pace(start, window)
    await gen.finish()
    return gen.result(connect_seconds)


def run_blocking(cfg: Config) -> dict[str, Any]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run(cfg))


def _child() -> int:
    """``python -m bench.wsload``: the line protocol described in the module docstring."""
    raw = json.loads(sys.stdin.readline())
    cfg = Config(**raw)
    order: dict[str, Any] = {}

    async def wait_start() -> tuple[float, tuple[float, float]]:
        print(json.dumps({"ready": True}), flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        order.update(json.loads(line))
        return order["start"], (order["window"][0], order["window"][1])

    async def main() -> dict[str, Any]:
        return await run(cfg, wait_start)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(main())
    # The result goes to a file: it can be larger than a pipe holds.
    with open(order["output"], "w") as f:
        json.dump(result, f)
    print(json.dumps({"done": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child())
