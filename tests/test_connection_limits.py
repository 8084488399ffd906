"""Connection-level limits of ``tapevault serve`` against clients that flood, never read or
never finish: header size (431), header and body read timeouts (408), idle connections, ping
floods on both WebSocket paths and on Twilio's unauthenticated socket, and X-Forwarded-For
believed only from configured proxies."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.server import Server, free_port, tapevault

pytestmark = pytest.mark.server

MB = 1024 * 1024
SHORT = "2"  # seconds: the header and body timeouts of the servers under test


def rss_bytes(pid: int) -> int:
    """The resident set size of a process (psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def server_pid(server: Server) -> int:
    assert server.process is not None
    return server.process.pid


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def connect(server: Server, timeout: float = 15.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or the socket times out)."""
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def server_side_open(sock: socket.socket) -> bool:
    """Whether the server still holds its end of this client's connection open (the kernel's
    view: ESTABLISHED), seen without reading anything from the client's end."""
    server = f":{sock.getpeername()[1]:04X}"
    client = f":{sock.getsockname()[1]:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(server) and fields[2].endswith(client):
            return fields[3] == "01"
    return False


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what the server may refuse halfway (it then resets or stops reading)."""
    with contextlib.suppress(OSError):
        sock.sendall(data)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("limits") / "data", free_port())
    srv.start(TAPEVAULT_HEADER_TIMEOUT=SHORT, TAPEVAULT_BODY_TIMEOUT=SHORT)
    try:
        yield srv
    finally:
        srv.stop()


# -- request heads -----------------------------------------------------------------------------


UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.mark.parametrize("upgrade", [b"", UPGRADE], ids=["http", "websocket-handshake"])
def test_a_header_over_the_limit_is_answered_431(server: Server, upgrade: bytes) -> None:
    """A 1 MiB header is refused with 431 and a reason, not read to its end and answered 200;
    a WebSocket handshake too."""
    with connect(server) as sock:
        head = (
            b"GET /twilio/media-stream HTTP/1.1\r\nHost: x\r\n"
            + upgrade
            + b"X-Big: "
            + b"a" * MB
            + b"\r\n\r\n"
        )
        sender = threading.Thread(target=send_quietly, args=(sock, head))
        sender.start()
        response = read_response(sock)
        sender.join(10)
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert b"request header fields over 65536 bytes" in response


def test_headers_under_the_limit_and_a_body_in_the_same_read_are_served(server: Server) -> None:
    """The limit counts the head only: a 60 KiB header followed by a body is answered."""
    body = b"x" * 200_000
    head = (
        b"POST /api/v1/ambient/session/create HTTP/1.1\r\nHost: x\r\nX-Pad: "
        + b"p" * 60_000
        + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    with connect(server) as sock:
        sock.sendall(head + body)
        response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 401 "), response[:200]  # no token: refused by Suki


def test_an_unfinished_header_is_answered_408_after_the_timeout(server: Server) -> None:
    """A request head that never completes is answered 408 and closed (TAPEVAULT_HEADER_TIMEOUT)."""
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 408 "), response[:200]
    assert b"request header not received in time" in response


def test_a_slow_header_sent_byte_by_byte_is_still_cut_off(server: Server) -> None:
    """Dribbling a header a byte at a time does not reset the header timeout."""
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(40):  # 40 x 0.25 s, well past the 2 s timeout
            try:
                sock.sendall(b"X")
            except OSError:
                break
            if select.select([sock], [], [], 0.25)[0]:
                break  # the server answered
        sock.settimeout(5)
        response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 408 "), response[:200]


def test_an_idle_connection_is_closed(server: Server) -> None:
    """A connection that never sends a request is closed without an answer."""
    with connect(server) as sock:
        assert sock.recv(100) == b""


def test_a_kept_alive_connection_serves_several_requests(server: Server) -> None:
    """Between requests of one connection the limits start again: three requests, three 200s."""
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            response = b""
            while not response.endswith(b'{"status":"ok"}'):
                chunk = sock.recv(65536)
                assert chunk, response
                response += chunk
            assert response.startswith(b"HTTP/1.1 200 "), response


def test_pipelined_answers_keep_their_order_and_heads(server: Server) -> None:
    """Heads held back to leave with their bodies (httpserver._HeadWithBody) never overtake or
    lose anything: four pipelined requests, HEADs (no body) between GETs, the last one closing
    the connection, answered in order, each head whole, and the connection then closed."""
    heads_only = b"HEAD /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    closing = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(heads_only + health + heads_only + closing)
        data = read_response(sock)
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 4, data
    for i, answer in enumerate(answers):
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"200 "), answer
        if i % 2 == 0:
            assert body == b"" and b"content-length:" in head.lower(), answer
        else:
            assert body == b'{"status":"ok"}', answer


def test_memory_stays_bounded_under_many_unfinished_huge_headers(server: Server) -> None:
    """40 connections each sending 8 MiB of a header that never ends cost far less than 320 MB."""
    before = rss_bytes(server_pid(server))
    socks = [connect(server, timeout=5) for _ in range(40)]
    try:
        line = b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * (8 * MB)
        senders = [threading.Thread(target=send_quietly, args=(s, line)) for s in socks]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(30)
        grown = rss_bytes(server_pid(server)) - before
    finally:
        for sock in socks:
            sock.close()
    assert grown < 100 * MB, f"RSS grew by {grown // MB} MB"


# -- request bodies ----------------------------------------------------------------------------


_CREDENTIALS: dict[Path, dict[str, str]] = {}


def suki_headers(server: Server) -> dict[str, str]:
    """A token of a tenant of this server (made once per server: the CLI takes a while)."""
    if server.data_dir not in _CREDENTIALS:
        tenant = server.tenant()
        _CREDENTIALS[server.data_dir] = {"sdp_suki_token": server.token(tenant["partner_id"])}
    return _CREDENTIALS[server.data_dir]


def test_a_stalled_upload_is_answered_408_and_its_spool_file_removed(server: Server) -> None:
    """An upload body that stops arriving is cut off with 408 and nothing of it is kept."""
    headers = suki_headers(server)
    created = requests.post(
        f"{server.base}/api/v1/ambient/session/create", headers=headers, timeout=10
    )
    session_id = created.json()["ambient_session_id"]
    spool = server.data_dir / "spool"
    with connect(server) as sock:
        sock.sendall(
            (
                f"POST /api/v1/ambient/session/{session_id}/audio HTTP/1.1\r\nHost: x\r\n"
                f"sdp_suki_token: {headers['sdp_suki_token']}\r\n"
                "Content-Type: audio/wav\r\nContent-Length: 1000000\r\n\r\n"
            ).encode()
            + b"\0" * 100_000
        )
        assert wait_for(lambda: any(spool.glob("*.part"))), "the upload never reached the spool"
        response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 408 "), response[:200]
    assert b"request body stalled" in response
    assert wait_for(lambda: not any(spool.glob("*.part"))), "the partial upload was kept"


def test_a_body_stalled_after_its_answer_gets_no_second_answer(server: Server) -> None:
    """A request refused before its body was read (401) and whose body then stalls is closed
    at the body timeout without a 408 tacked on after the 401."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /api/v1/ambient/session/s/audio HTTP/1.1\r\nHost: x\r\n"
            b"sdp_suki_token: nonsense\r\nContent-Length: 1000000\r\n\r\n" + b"\0" * 1000
        )
        response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 401 "), response[:200]
    assert b"HTTP/1.1 408" not in response


def test_a_client_that_stops_reading_its_answers_is_dropped(server: Server) -> None:
    """Answers piling up for a client that reads nothing are not kept for good: once writing
    has stalled for the body timeout, the connection is dropped (the rest is never sent)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(15)
    with sock:
        sock.connect(("127.0.0.1", server.port))
        request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request * 100)  # ~12 MB of answers, far more than socket buffers hold
        one = len(requests.get(f"{server.base}/openapi.json", timeout=10).content)
        # Read nothing until the server has let go of the connection (its body timeout is 2 s).
        assert wait_for(lambda: not server_side_open(sock)), "the stalled connection was kept"
        received = 0
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
    assert received < 50 * one, f"{received} bytes: the stalled connection was kept"


# -- WebSocket ping floods ---------------------------------------------------------------------


def masked(opcode: int, payload: bytes) -> bytes:
    """One final client frame (payload under 126 bytes), masked as RFC 6455 requires."""
    mask = os.urandom(4)
    return (
        bytes((0x80 | opcode, 0x80 | len(payload)))
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


def open_websocket(server: Server, path: str, headers: dict[str, str]) -> socket.socket:
    """A WebSocket opened by hand, with a small receive buffer: a client that reads slowly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # the handshake only: frames stay unread in the socket
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def flood_pings(server: Server, sock: socket.socket, seconds: float) -> int:
    """Send pings as fast as the server takes them, reading nothing, for at most ``seconds``
    (less once the server stops reading); the server's RSS growth meanwhile."""
    pid = server_pid(server)
    before = rss_bytes(pid)
    ping = masked(0x9, b"p" * 125) * 64
    sock.settimeout(1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.sendall(ping)
        except (TimeoutError, OSError):
            break  # the server stopped reading, or closed
    return rss_bytes(pid) - before


def close_code(sock: socket.socket, limit: int = 64 * MB) -> int | None:
    """Read (a bounded amount) until the server's close frame; its code, None if none came."""
    sock.settimeout(5)
    data = b""
    seen = 0
    while seen < limit:
        try:
            chunk = sock.recv(1 << 20)
        except (TimeoutError, OSError):
            return None
        if not chunk:
            return None
        seen += len(chunk)
        data += chunk
        while len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F):
            opcode, size = data[0] & 0x0F, data[1] & 0x7F
            assert size < 126, "the server sent a frame this reader does not expect"
            if opcode == 0x8:
                return int.from_bytes(data[2:4], "big")
            data = data[2 + size :]
    return None


@pytest.fixture(scope="module", params=["direct", "asgi"])
def stream_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp(request.param) / "data", free_port())
    srv.start(TAPEVAULT_DIRECT_STREAMS="on" if request.param == "direct" else "off")
    try:
        yield srv
    finally:
        srv.stop()


# -- closed streams free their buffers ----------------------------------------------------------
# (First on each server: the heap a flood freed would hide a leak.)


def settled_rss(pid: int) -> int:
    """The RSS once it stops moving (the server has taken in, or let go of, what was sent)."""
    last = rss_bytes(pid)
    for _ in range(50):
        time.sleep(0.2)
        now = rss_bytes(pid)
        if abs(now - last) < MB:
            return now
        last = now
    return last


def abandon_large_frames(server: Server, headers: dict[str, str], session_id: str) -> None:
    """Ten streams each send most of an 8 MiB frame, then vanish."""
    frame_head = bytes((0x82, 0x80 | 127)) + (8 * MB).to_bytes(8, "big") + b"\0\0\0\0"
    socks = [
        open_websocket(server, f"/api/v1/ambient/session/{session_id}/stream", headers)
        for _ in range(10)
    ]
    for sock in socks:
        send_quietly(sock, frame_head + b"\0" * (7 * MB))
    for sock in socks:
        sock.close()


def test_streams_closed_mid_frame_leave_no_memory_behind(stream_server: Server) -> None:
    """Rounds of streams that vanish mid-frame do not add up: what one round buffered is freed
    (without waiting for a full garbage collection) and reused by the next."""
    server = stream_server
    headers = suki_headers(server)
    created = requests.post(
        f"{server.base}/api/v1/ambient/session/create", headers=headers, timeout=10
    )
    session_id = created.json()["ambient_session_id"]
    pid = server_pid(server)
    abandon_large_frames(server, headers, session_id)
    after_first = settled_rss(pid)
    for _ in range(2):
        abandon_large_frames(server, headers, session_id)
    grown = settled_rss(pid) - after_first
    assert grown < 50 * MB, f"RSS grew by {grown // MB} MB over two more rounds"


def test_a_ping_flood_on_a_live_stream_is_closed_1008(stream_server: Server) -> None:
    """An authenticated stream that floods pings and never reads is closed with 1008 before
    its pongs pile up in memory (direct path and TAPEVAULT_DIRECT_STREAMS=off)."""
    server = stream_server
    headers = suki_headers(server)
    created = requests.post(
        f"{server.base}/api/v1/ambient/session/create", headers=headers, timeout=10
    )
    session_id = created.json()["ambient_session_id"]
    with open_websocket(server, f"/api/v1/ambient/session/{session_id}/stream", headers) as sock:
        grown = flood_pings(server, sock, 1.5)
        code = close_code(sock)
    assert grown < 100 * MB, f"RSS grew by {grown // MB} MB"
    assert code == 1008


def test_a_ping_flood_before_twilio_authentication_is_closed_1008(stream_server: Server) -> None:
    """/twilio/media-stream without credentials: a ping flood is closed with 1008 at once."""
    server = stream_server
    with open_websocket(server, "/twilio/media-stream", {}) as sock:
        grown = flood_pings(server, sock, 1.5)
        code = close_code(sock)
    assert grown < 100 * MB, f"RSS grew by {grown // MB} MB"
    assert code == 1008


def test_twilio_closes_a_peer_that_chatters_instead_of_starting(server: Server) -> None:
    """Before ``start`` only a few messages are read: a peer that keeps sending ``connected``
    is closed with 4400 instead of being kept open past the start deadline."""
    with open_websocket(server, "/twilio/media-stream", {}) as sock:
        connected = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        for _ in range(6):
            send_quietly(sock, masked(0x1, connected.encode()))
        assert close_code(sock) == 4400


# -- X-Forwarded-For -----------------------------------------------------------------------------


def refused_client_ips(server: Server) -> list[str | None]:
    """The client address of every refused (401) request in the access log."""
    out = tapevault("audit", "export", "--format", "jsonl", env=server.env)
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [r.get("client_ip") for r in records if r.get("status") == 401]


def forged_request(server: Server) -> None:
    requests.post(
        f"{server.base}/api/v1/ambient/session/create",
        headers={"sdp_suki_token": "not-a-token", "X-Forwarded-For": "203.0.113.9"},
        timeout=10,
    )


def test_x_forwarded_for_is_not_believed_from_a_client_that_is_no_proxy(server: Server) -> None:
    """With no TAPEVAULT_TRUSTED_PROXIES, a loopback client cannot choose its logged address."""
    forged_request(server)
    assert wait_for(lambda: bool(refused_client_ips(server)))
    assert set(refused_client_ips(server)) == {"127.0.0.1"}


def test_x_forwarded_for_is_believed_from_a_trusted_proxy(tmp_path: Path) -> None:
    """A client listed in TAPEVAULT_TRUSTED_PROXIES is a proxy: the address it forwards is
    logged."""
    srv = Server(tmp_path / "data", free_port()).start(TAPEVAULT_TRUSTED_PROXIES="127.0.0.0/8")
    try:
        forged_request(srv)
        assert wait_for(lambda: bool(refused_client_ips(srv)))
        assert set(refused_client_ips(srv)) == {"203.0.113.9"}
    finally:
        srv.stop()
