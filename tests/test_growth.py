"""The grown-vault generator (``bench/growthfill.py``, issue 14 part 6) at a tiny scale, on SQLite
and PostgreSQL: the vault it fills still migrates, serves a session's recording URLs, lists a
tenant's sessions, shows a recording's access history, purges what expired, and its access
log (chain, Merkle tree, signed checkpoints) passes ``tapevault audit verify``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from bench.growthfill import Filler, Plan, open_sink, recording_id, session_id

from tapevault import cli
from tapevault.config import Settings
from tapevault.db.auditstore import entry_from_json, entry_json
from tapevault.runtime import open_runtime
from tests.dialects import asgi_client
from tests.support import audit_verify

PLAN = Plan(tenants=5, sessions=40, recordings=200, records=1500, expired=20, purged=40)


def _cli(settings: Settings, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    flags = ["--data-dir", str(settings.data_dir), "--database-url", settings.database_url]
    assert cli.main([*args, *flags]) == 0
    return capsys.readouterr().out


def test_a_grown_vault_serves_lists_and_verifies(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _cli(settings, capsys, "migrate")
    big = json.loads(_cli(settings, capsys, "tenant", "create", "big", "--json"))
    typical = json.loads(_cli(settings, capsys, "tenant", "create", "typical", "--json"))
    sink = open_sink(settings.database_url)
    try:
        filler = Filler(
            sink,
            settings.database_url,
            PLAN,
            settings.audit_key_path,
            [big["partner_id"], typical["partner_id"]],
        )
        filled = filler.run()
    finally:
        sink.close()
    assert filled.counts["recordings"] == PLAN.recordings
    assert filled.counts["access_log"] == PLAN.records
    assert filled.counts["checkpoints"] >= 1
    _cli(settings, capsys, "migrate")  # the filled schema is still at the head
    # The fill writes each record's JSON itself (not through ``entry_json``): byte for byte what
    # the server would have stored (``audit verify`` below holds the hashes to canonical_bytes).
    sink = open_sink(settings.database_url)
    try:
        stored = [str(e) for (e,) in sink.execute("SELECT entry FROM audit_log ORDER BY seq")]
    finally:
        sink.close()
    assert len(stored) == PLAN.records
    assert all(entry_json(entry_from_json(text)) == text for text in stored)

    # The newest session of the big tenant: its recordings are live (not past retention).
    newest = max(s for s in range(PLAN.sessions) if filler.tenant_of_session[s] == 0)
    first = filler.session_first_recording[newest]
    token = _cli(settings, capsys, "token", "issue", "--tenant", big["partner_id"]).strip()
    bearer = {"Authorization": f"Bearer {big['api_key']}"}

    async def reads() -> None:
        rt = open_runtime(settings)
        try:
            async with asgi_client(rt) as client:
                got = await client.get(
                    f"/api/v1/ambient/session/{session_id(newest)}/recording",
                    headers={"sdp_suki_token": token},
                )
                assert got.status_code == 200, got.text
                assert got.json()["recordings"]
                listed = await client.get("/api/v1/sessions?limit=10", headers=bearer)
                assert listed.status_code == 200, listed.text
                assert len(listed.json()["sessions"]) == 10
                small = await client.get(
                    "/api/v1/sessions", headers={"Authorization": f"Bearer {typical['api_key']}"}
                )
                assert small.status_code == 200, small.text
                access = await client.get(
                    f"/api/v1/recordings/{filled.hot_recording or recording_id(first)}/access",
                    headers=bearer,
                )
                assert access.status_code == 200, access.text
        finally:
            rt.close()

    asyncio.run(reads())
    purged = _cli(settings, capsys, "purge")
    assert "purged the audio of" in purged
    assert int(purged.split("purged the audio of ")[1].split()[0]) >= 1
    code, out = audit_verify(settings, capsys)
    assert code == 0, out
    assert "Merkle tree:" in out and "signed root(s) match the records" in out


def test_plans_scale() -> None:
    full = Plan.scaled(1.0)
    assert (full.tenants, full.sessions, full.recordings, full.records) == (
        1_000,
        2_000_000,
        10_000_000,
        50_000_000,
    )
    assert full.expired == 1_000_000
    tiny = Plan.scaled(0.00001)
    assert tiny.recordings >= tiny.sessions >= 1 and tiny.tenants >= 3


def test_ids_are_distinct(tmp_path: Path) -> None:
    assert len({session_id(n) for n in range(20_000)}) == 20_000
    assert len({recording_id(n) for n in range(20_000)}) == 20_000
    assert all(len(session_id(n)) == 36 for n in range(100))
