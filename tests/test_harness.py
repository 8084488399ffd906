"""The test harness itself: shared helpers in support modules, waiting that fails clearly, and a
real server that holds its port, takes only the test's settings and reports its output."""

from __future__ import annotations

import ast
import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tapevault.audio_gen import tone_wav_bytes
from tests.server import Server, inherited_environment
from tests.support import make_session, new_session, until, wait_for

TESTS = Path(__file__).resolve().parent


def test_no_test_module_imports_another() -> None:
    """A helper two test modules need lives in a support module, never in a test module."""
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offenders += [
                f"{path.name}:{node.lineno} imports {name}"
                for name in names
                if name.startswith("tests.test_") or name.startswith("test_")
            ]
    assert not offenders, "\n".join(offenders)


def test_wait_for_returns_the_first_answer_that_is_not_none_or_false() -> None:
    """``wait_for`` polls until the probe answers something other than None or False (a 410
    response is falsy, yet an answer) and returns that answer."""
    answers = iter([None, False, None, 0, "later"])
    assert wait_for(lambda: next(answers), every=0) == 0
    gone = requests.Response()
    gone.status_code = 410
    assert wait_for(lambda: gone) is gone


def test_wait_for_fails_at_the_deadline_saying_what_it_waited_for() -> None:
    """At the deadline the failure names the condition and the probe's last answer."""
    with pytest.raises(AssertionError, match=r"the moon to rise.*last answer was False"):
        wait_for(lambda: False, timeout=0.05, what="the moon to rise", every=0.01)


async def test_until_waits_for_the_event_loop_and_fails_clearly() -> None:
    """``until`` lets other tasks run until the condition holds, and names it when it never
    does."""
    seen: list[int] = []

    async def later() -> None:
        seen.append(1)

    task = asyncio.ensure_future(later())
    await until(lambda: seen)
    await task
    with pytest.raises(AssertionError, match="nothing at all"):
        await until(lambda: False, within=0.05, what="nothing at all")


def test_a_server_holds_its_port_from_the_start(tmp_path: Path) -> None:
    """``Server(data_dir)`` binds a free port at once and keeps it: nobody else can bind it
    before or between the server's runs, and the server answers on it, seeing each client's
    own address (uvicorn wraps an inherited socket as if it were a Unix one)."""
    srv = Server(tmp_path / "data")
    try:
        assert srv.port > 0
        with pytest.raises(OSError), socket.socket() as other:
            other.bind(("127.0.0.1", srv.port))
        srv.start()
        assert requests.get(f"{srv.base}/healthz", timeout=10).json() == {"status": "ok"}
        bearer = {"authorization": f"Bearer {srv.tenant()['api_key']}"}
        first = requests.get(f"{srv.base}/api/v1/audit", headers=bearer, timeout=10)
        assert first.status_code == 200  # and logged, with the address it came from
        records = requests.get(f"{srv.base}/api/v1/audit", headers=bearer, timeout=10).json()
        assert records["records"], records
        assert {r["client_ip"] for r in records["records"]} == {"127.0.0.1"}, records
        srv.stop()
        with pytest.raises(OSError), socket.socket() as other:
            other.bind(("127.0.0.1", srv.port))
    finally:
        srv.close()


def test_the_tests_settings_win_over_the_shells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``TAPEVAULT_*`` variable left in the shell never reaches the server, and the test's own
    settings win over the harness's and the shell's."""
    monkeypatch.setenv("TAPEVAULT_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    monkeypatch.setenv("TAPEVAULT_PUBLIC_URL", "https://elsewhere.example")
    monkeypatch.setenv("TAPEVAULT_MAX_UPLOAD_BYTES", "1G")
    srv = Server(tmp_path / "data").start(TAPEVAULT_MAX_UPLOAD_BYTES="4K")
    try:
        token = srv.token(srv.tenant()["partner_id"])
        session_id, _ = make_session(srv, token, seconds=0.05)  # 1.6 kB: under the test's limit
        urls = requests.get(
            f"{srv.base}/api/v1/ambient/session/{session_id}/recording",
            headers={"sdp_suki_token": token},
            timeout=10,
        ).json()
        assert urls["recordings"][0]["presigned_url"].startswith(f"{srv.base}/media/")
        session_id = new_session(srv, {"sdp_suki_token": token})
        too_big = requests.post(
            f"{srv.base}/api/v1/ambient/session/{session_id}/audio",
            headers={"sdp_suki_token": token, "content-type": "audio/wav"},
            data=tone_wav_bytes(1.0),  # 32 kB: over the test's 4 kB, under the shell's 1 GB
            timeout=30,
        )
        assert too_big.status_code == 413, too_big.text
    finally:
        srv.close()


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    """When ``tapevault serve`` exits during start-up, the failure carries its own words."""
    srv = Server(tmp_path / "data")
    expected = r"(?s)exited with 2 .*TAPEVAULT_PROCESSES: .many. is not a count"
    try:
        with pytest.raises(AssertionError, match=expected):
            srv.start(TAPEVAULT_PROCESSES="many")
    finally:
        srv.close()


INNER_TEST = """
import requests
from tests.server import Server


def test_fails_after_a_request(tmp_path):
    srv = Server(tmp_path / "data").start()
    try:
        requests.get(f"{srv.base}/healthz", timeout=10)
        assert False, "the inner test fails on purpose"
    finally:
        srv.close()


def test_passes(tmp_path):
    srv = Server(tmp_path / "data").start()
    srv.close()
"""


def test_a_failing_test_reports_what_its_server_wrote(tmp_path: Path) -> None:
    """A failing test's report carries the output of the servers it ran; a passing one's
    does not."""
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    pytest_args = ["-p", "tests.conftest", "-p", "no:cacheprovider", "-rA", "-q"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *pytest_args, str(tmp_path / "test_inner.py")],
        cwd=TESTS.parent,
        env=inherited_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout
    assert "1 failed, 1 passed" in out, out
    failure = out[out.index("test_fails_after_a_request") : out.index("PASSES")]
    assert "tapevault serve output" in failure and "Application startup complete" in failure
    assert "the inner test fails on purpose" in failure
    assert out.count("tapevault serve output") == 1, out


def test_serve_refuses_an_fd_that_is_not_a_listening_socket(tmp_path: Path) -> None:
    """``tapevault serve --fd N`` with a file, or a socket that does not listen, exits at once
    with a setting error naming ``--fd``."""
    env = {**inherited_environment(), "TAPEVAULT_DATA_DIR": str(tmp_path / "data")}
    with (tmp_path / "not-a-socket").open("w") as file, socket.socket() as idle:
        for fd, problem in ((file.fileno(), "not an open socket"), (idle.fileno(), "listening")):
            done = subprocess.run(
                [sys.executable, "-m", "tapevault.cli", "serve", "--fd", str(fd)],
                env=env,
                pass_fds=(fd,),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 2, done.stderr
            assert f"invalid setting --fd: {fd} is" in done.stderr and problem in done.stderr
