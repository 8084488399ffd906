"""A recovered live stream's finalization waits for the node whose disk holds its spool; when
that node is gone for good, `tapevault node forget` lets any node finish it with what the store
holds. On SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tapevault import cli
from tapevault.config import Settings
from tapevault.core.model import RecordingStatus, SessionKind
from tapevault.ingest.liveness import node_name
from tapevault.runtime import Runtime

LOST = "lost-host+0badc0de"


def test_a_lost_nodes_streams_wait_for_it_until_it_is_forgotten(
    runtime: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    vault = runtime.vault
    tenant = vault.tenants.create("clinic", 86400).tenant
    session = vault.sessions.create_session(tenant, SessionKind.AMBIENT)
    recording = vault.ingest.open_stream(
        tenant,
        session.session_id,
        "stream/pcm_s16le",
        f"{LOST}:4242:1",
        sample_rate=16000,
        channels=1,
        bits_per_sample=16,
    )
    assert recording.spool_node == node_name(settings.data_dir)
    # Written by a process of the lost node: its spool is there, and the job waits for it.
    lost = replace(recording, spool_node=LOST)
    assert vault.ingest.take_over_stream(lost, stale_seconds=None, spool_wait_seconds=600)
    assert runtime.worker.run_until_idle() == 0  # bound to the lost node: not this one's
    data = ["--data-dir", str(settings.data_dir), "--database-url", settings.database_url]
    assert cli.main(["node", "show", *data]) == 0
    shown = capsys.readouterr().out
    assert f"this node: {node_name(settings.data_dir)}" in shown
    assert f"{LOST}: 1 job(s) waiting for it" in shown
    mine = node_name(settings.data_dir)
    assert cli.main(["node", "forget", mine, *data]) == 1  # its own spools are here
    assert cli.main(["node", "forget", LOST, *data]) == 0
    assert "1 job(s) of node" in capsys.readouterr().out
    assert runtime.worker.run_until_idle() == 1
    done = runtime.repo.get_recording(recording.recording_id)
    # Nothing of it reached the store: finished empty, marked recovered, not left waiting.
    assert done is not None and done.status is RecordingStatus.AVAILABLE
    assert done.recovered and done.duration_ms == 0
