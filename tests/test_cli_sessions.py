"""``tapevault sessions list|show``: the API's filters and JSON from the command line."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tapevault import cli
from tapevault.audio_gen import tone_wav_bytes
from tapevault.config import Settings
from tapevault.core.clock import FixedClock
from tapevault.runtime import open_runtime
from tests.dialects import asgi_client, customer, upload_channel

CALL = "CA" + "e" * 32


@pytest.fixture
def data(tmp_path: Path) -> tuple[list[str], str, str]:
    """A tenant with an ambient session (created only) and a call with one channel: the data
    flags, the tenant's id and the ambient session's id."""
    settings = Settings.load({"data_dir": str(tmp_path / "data")}, env={})
    clock = FixedClock(time.time())
    runtime = open_runtime(settings, clock=clock)
    try:
        who = customer(runtime, clock)

        async def make() -> str:
            async with asgi_client(runtime) as client:
                created = await client.post("/api/v1/ambient/session/create", headers=who.suki)
                clock.advance(5)
                answer = await upload_channel(
                    client, runtime, who, CALL, "inbound", tone_wav_bytes(0.5)
                )
                assert answer.status_code == 202
                session_id: str = created.json()["ambient_session_id"]
                return session_id

        session_id = asyncio.run(make())
    finally:
        runtime.close()
    return ["--data-dir", str(settings.data_dir)], who.tenant.partner_id, session_id


def test_list_filters_and_prints_the_apis_json(
    data: tuple[list[str], str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--json is the API's page; --kind, --status and --external-id filter as the API does; the
    table names each session."""
    flags, tenant, session_id = data
    assert cli.main(["sessions", "list", "--tenant", tenant, "--json", *flags]) == 0
    page = json.loads(capsys.readouterr().out)
    assert [s["kind"] for s in page["sessions"]] == ["call", "ambient"]
    assert page["next_cursor"] is None
    argv = ["sessions", "list", "--tenant", tenant, "--json", "--kind", "ambient", *flags]
    assert cli.main(argv) == 0
    assert [s["session_id"] for s in json.loads(capsys.readouterr().out)["sessions"]] == [
        session_id
    ]
    argv = ["sessions", "list", "--tenant", tenant, "--external-id", CALL, "--json", *flags]
    assert cli.main(argv) == 0
    (call,) = json.loads(capsys.readouterr().out)["sessions"]
    assert call["external_id"] == CALL and call["recording_count"] == 1
    argv = ["sessions", "list", "--tenant", tenant, "--status", "created", *flags]
    assert cli.main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["CREATED", "SESSION", "KIND", "STATUS"]
    assert len(table) == 2 and session_id in table[1] and "created" in table[1]
    argv = ["sessions", "list", "--tenant", tenant, "--limit", "1", *flags]
    assert cli.main(argv) == 0
    assert "more: add --cursor " in capsys.readouterr().err


def test_list_refuses_a_bad_filter_naming_the_flag(
    data: tuple[list[str], str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value is exit status 1 and one line naming the flag, as the user typed it."""
    flags, tenant, _ = data
    argv = ["sessions", "list", "--tenant", tenant, "--created-after", "soon", *flags]
    assert cli.main(argv) == 1
    assert "--created-after must be" in capsys.readouterr().err
    argv = ["sessions", "list", "--tenant", tenant, "--status", "done", *flags]
    assert cli.main(argv) == 1
    assert "--status must be" in capsys.readouterr().err


def test_show_by_id_or_call_sid(
    data: tuple[list[str], str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """show takes a session id or a call's SID; --json is the API's session body; an unknown
    id is exit status 1 with the API's message."""
    flags, tenant, session_id = data
    assert cli.main(["sessions", "show", "--tenant", tenant, CALL, "--json", *flags]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["external_id"] == CALL and body["recordings"][0]["channel"] == "inbound"
    assert body["recordings"][0]["created_at"].endswith("Z")
    assert cli.main(["sessions", "show", "--tenant", tenant, session_id, *flags]) == 0
    shown = capsys.readouterr().out
    assert f"session_id: {session_id}" in shown and "status: created" in shown
    assert cli.main(["sessions", "show", "--tenant", tenant, "nope", *flags]) == 1
    assert "Session not found." in capsys.readouterr().err
