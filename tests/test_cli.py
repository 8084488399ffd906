"""The ``tapevault`` command as a new user meets it: help, tenants, deletion, the demo."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapevault import cli
from tapevault.audio_gen import tone_wav_bytes
from tapevault.config import Settings
from tapevault.core.clock import FixedClock
from tapevault.runtime import open_runtime
from tests.dialects import asgi_client, customer, upload_channel
from tests.server import free_port

CALL = "CA0000000000000000000000000000cli1"
DEMO = [sys.executable, "-m", "tapevault.cli", "demo"]


def leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable subcommand's parser, with the words that reach it."""
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        yield path, parser
        return
    for action in subcommands:
        for name, sub in action.choices.items():
            yield from leaf_parsers(sub, (*path, name))


def run(
    *args: str, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tapevault.cli", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def test_every_subcommand_help_runs_and_documents_every_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each subcommand's --help exits 0; every option and argument has a help text; no help
    names an internal symbol."""
    leaves = list(leaf_parsers(cli.build_parser()))
    assert len(leaves) > 20
    for path, parser in leaves:
        for action in parser._actions:
            assert action.help, f"tapevault {' '.join(path)}: {action.dest} has no help text"
        with pytest.raises(SystemExit) as exited:
            cli.main([*path, "--help"])
        assert exited.value.code == 0
        shown = capsys.readouterr().out
        assert "SETTINGS_DOC" not in shown and "tapevault.config" not in shown
        assert "partner" not in shown.replace("partner_id", ""), f"{path} says partner"


def test_server_settings_only_on_commands_that_serve(capsys: pytest.CaptureFixture[str]) -> None:
    """`token issue --help` offers the data settings but not --processes; `serve` offers all."""
    for path, parser in leaf_parsers(cli.build_parser()):
        flags = {opt for action in parser._actions for opt in action.option_strings}
        if path in (("serve",),):
            assert {"--processes", "--port", "--data-dir", "--purge-interval"} <= flags
        elif path == ("demo",):
            assert "--port" in flags and "--processes" not in flags
        elif path == ("fetch",):  # a client of a server over HTTP: no local settings at all
            assert not {"--port", "--data-dir", "--database-url"} & flags, path
            assert {"--url", "--out"} <= flags
        else:
            assert not {"--processes", "--port", "--host", "--cors-origins"} & flags, path
            assert "--data-dir" in flags and "--database-url" in flags, path
    with pytest.raises(SystemExit):
        cli.main(["token", "issue", "--help"])
    shown = capsys.readouterr().out
    assert "--processes" not in shown and "--tenant ID" in shown and "--data-dir" in shown


def test_tenant_create_is_quiet_and_says_the_key_is_shown_once(tmp_path: Path) -> None:
    """A first command on a fresh data directory prints no Alembic lines; plain output says
    the API key is shown only once, and --json keeps stdout one JSON document."""
    env = {"TAPEVAULT_DATA_DIR": str(tmp_path / "data")}
    plain = run("tenant", "create", "St. Mary's", env=env)
    assert plain.returncode == 0, plain.stderr
    assert "alembic" not in plain.stderr.lower(), plain.stderr
    assert "api_key: tvk_" in plain.stdout and "only this once" in plain.stdout
    as_json = run("tenant", "create", "Other", "--json", env=env)
    assert as_json.returncode == 0 and "alembic" not in as_json.stderr.lower()
    assert as_json.stdout.lstrip().startswith("{") and as_json.stdout.rstrip().endswith("}")
    assert "only this once" in as_json.stderr


def test_tenant_flag_and_its_hidden_old_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--tenant selects the tenant; --partner still works for old scripts (and --partner=X)."""
    data = ["--data-dir", str(tmp_path / "data")]
    assert cli.main(["tenant", "create", "clinic", *data]) == 0
    tenant_id = capsys.readouterr().out.split("partner_id: ")[1].split()[0]
    for flag in (["--tenant", tenant_id], ["--partner", tenant_id], [f"--partner={tenant_id}"]):
        assert cli.main(["tenant", "show", *flag, *data]) == 0
        assert f"partner_id: {tenant_id}" in capsys.readouterr().out
    assert cli.main(["tenant", "show", "--tenant", "nope", *data]) == 1
    assert "no tenant with id 'nope'" in capsys.readouterr().err


class Terminal(io.StringIO):
    """Standard input at a terminal, where someone types ``answer``."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Settings, str, str]:
    """A SQLite data directory with one tenant and one call recording: (settings, tenant id,
    recording id)."""
    settings = Settings.load({"data_dir": str(tmp_path / "data")}, env={})
    clock = FixedClock(time.time())
    runtime = open_runtime(settings, clock=clock)
    try:
        who = customer(runtime, clock)

        async def upload() -> None:
            async with asgi_client(runtime) as client:
                answer = await upload_channel(
                    client, runtime, who, CALL, "inbound", tone_wav_bytes(0.5)
                )
                assert answer.status_code == 202

        asyncio.run(upload())
    finally:
        runtime.close()
    db = sqlite3.connect(settings.data_dir / "tapevault.db")
    try:
        (recording_id,) = db.execute("SELECT recording_id FROM recordings").fetchone()
    finally:
        db.close()
    assert servable(settings, recording_id)
    return settings, who.tenant.partner_id, str(recording_id)


def servable(settings: Settings, recording_id: str) -> bool:
    runtime = open_runtime(settings)
    try:
        recording = runtime.repo.get_recording(recording_id)
        assert recording is not None
        return recording.is_servable
    finally:
        runtime.close()


def test_delete_without_a_terminal_needs_yes(recorded: tuple[Settings, str, str]) -> None:
    """Without a terminal and without --yes, delete erases nothing: exit 2 and one line."""
    settings, tenant_id, recording_id = recorded
    env = {"TAPEVAULT_DATA_DIR": str(settings.data_dir)}
    args = ("delete", "--tenant", tenant_id, "--recording", recording_id)
    refused = run(*args, env=env, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "--yes" in refused.stderr, refused.stderr
    assert servable(settings, recording_id)
    done = run(*args, "--yes", env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and f"deleted the audio of recording {recording_id}" in done.stdout
    assert not servable(settings, recording_id)


def test_delete_asks_at_a_terminal(
    recorded: tuple[Settings, str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """At a terminal delete asks; anything but y keeps the audio, y erases it."""
    settings, tenant_id, recording_id = recorded
    args = ["delete", "--data-dir", str(settings.data_dir), "--tenant", tenant_id]
    args += ["--recording", recording_id]
    monkeypatch.setattr(sys, "stdin", Terminal("\n"))
    assert cli.main(args) == 1
    assert "cannot be undone" in capsys.readouterr().err
    assert servable(settings, recording_id)
    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    assert cli.main(args) == 0
    assert not servable(settings, recording_id)


def test_demo_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    """A port someone else listens on: exit 2, one line naming the port and --port, and
    nothing set up (no data directory)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / "data"
        done = run("demo", "--data-dir", str(data), "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"port {port} is already in use" in done.stderr and "--port" in done.stderr
    assert not data.exists()


def test_demo_ctrl_c_writes_the_shutdown_checkpoint(tmp_path: Path) -> None:
    """Ctrl-C on a serving demo shuts down as serve does: the access log's head is covered by
    a signed checkpoint."""
    data = tmp_path / "data"
    process = subprocess.Popen(
        [*DEMO, "--data-dir", str(data), "--port", str(free_port()), "--log-level", "warning"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # ends when the process does
            seen.append(line)
            if "Press Ctrl-C" in line:
                break
        assert "Press Ctrl-C" in "".join(seen), "".join(seen)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    db = sqlite3.connect(data / "tapevault.db")
    try:
        head = db.execute("SELECT head_seq FROM audit_state").fetchone()[0]
        signed = db.execute("SELECT max(size) FROM audit_checkpoints").fetchone()[0]
    finally:
        db.close()
    assert head > 0 and signed == head
