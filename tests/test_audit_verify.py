"""`tapevault audit verify` against a log tampered with directly in the database, on SQLite
and PostgreSQL: each change, deletion, insertion and reordering is named at its record."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import text

from tapevault import cli
from tapevault.config import Settings
from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.audit import chain
from tapevault.core.clock import FixedClock
from tapevault.db.auditstore import entry_json
from tapevault.runtime import Runtime, open_runtime

RECORDS = 40


@pytest.fixture
def logged(settings: Settings, clock: FixedClock) -> Iterator[Runtime]:
    """A log of RECORDS records with checkpoints along the way, closed (as after a restart)."""
    rt = open_runtime(settings, clock=clock)
    assert rt.audit is not None
    for i in range(RECORDS):
        rt.context.access_log.commit(
            AccessEvent(
                action=Action.MEDIA_PLAYBACK if i % 3 else Action.URLS_ISSUE,
                actor=Actor(partner_id="p1", kind="suki_token", token_id=f"jti-{i}"),
                status=206,
                at_ms=int(clock.now() * 1000) + i,
                session_id="s1",
                recording_id=f"r{i % 4}",
                ranges=[(0, i * 100)],
                bytes_sent=i * 100 + 1,
            )
        )
        if i in (9, 29):
            rt.audit.checkpoint()
        clock.advance(1)
    rt.close()
    yield rt


def run_verify(settings: Settings, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(
        [
            "audit",
            "verify",
            "--data-dir",
            str(settings.data_dir),
            "--database-url",
            settings.database_url,
        ]
    )
    return code, capsys.readouterr().out


def sql(rt: Runtime, *statements: str) -> None:
    with rt.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)  # as typed: no bind-parameter parsing


def test_untouched_log_verifies(
    logged: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log nobody touched verifies clean, checkpoints included."""
    code, out = run_verify(settings, capsys)
    assert code == 0, out
    assert f"{RECORDS} record(s)" in out and "verifies" in out
    assert "3 checkpoint(s)" in out  # at records 10 and 30, and the one close() writes


@pytest.mark.parametrize(
    ("tampering", "seq", "kind"),
    [
        (
            # What a record says (here: the bytes it served), inside its JSON.
            [
                "UPDATE audit_log SET entry = replace(entry, '\"bytes_sent\":', "
                "'\"bytes_sent\":9') WHERE seq = 17"
            ],
            17,
            "modified",
        ),
        # A filterable column, edited to hide the record from the tenant's queries.
        (["UPDATE audit_log SET tenant_id = 'someone-else' WHERE seq = 3"], 3, "modified"),
        (["UPDATE audit_log SET actor_id = 'someone-else' WHERE seq = 4"], 4, "modified"),
        (["DELETE FROM audit_log WHERE seq = 22"], 22, "removed"),
        (
            # Delete record 12 and close the gap, as a careful attacker would.
            [
                "DELETE FROM audit_log WHERE seq = 12",
                "UPDATE audit_log SET seq = seq + 1000000 WHERE seq > 12",
                "UPDATE audit_log SET seq = seq - 1000001 WHERE seq > 1000000",
            ],
            12,
            "removed",
        ),
        (
            # Make room at 25 and insert a forged record there.
            [
                "UPDATE audit_log SET seq = seq + 1000001 WHERE seq >= 25",
                "UPDATE audit_log SET seq = seq - 1000000 WHERE seq > 1000000",
                "INSERT INTO audit_log (seq, at_ms, tenant_id, action, actor_id, entry, "
                "prev_hash, hash) SELECT 25, at_ms, tenant_id, 'media.playback', 'forged', "
                "entry, hash, hash FROM audit_log WHERE seq = 24",
            ],
            25,
            "inserted",
        ),
        (
            # Swap records 30 and 31 by their positions.
            [
                "UPDATE audit_log SET seq = -1 WHERE seq = 30",
                "UPDATE audit_log SET seq = 30 WHERE seq = 31",
                "UPDATE audit_log SET seq = 31 WHERE seq = -1",
            ],
            30,
            "reordered",
        ),
    ],
)
def test_tampering_is_named_at_its_record(
    logged: Runtime,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    tampering: list[str],
    seq: int,
    kind: str,
) -> None:
    """Each edit made straight in the database is reported as the first bad record."""
    sql(logged, *tampering)
    code, out = run_verify(settings, capsys)
    assert code == 1, out
    assert f"FIRST BAD RECORD: {seq} ({kind})" in out, out


def test_truncated_tail_is_caught(
    logged: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cutting the newest records off is named too: the head the log keeps says more exist."""
    sql(logged, "DELETE FROM audit_log WHERE seq > 35")
    code, out = run_verify(settings, capsys)
    assert code == 1 and "FIRST BAD RECORD: 36 (removed)" in out, out


def test_rewritten_suffix_is_caught_by_a_checkpoint(
    logged: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """An attacker who re-chains everything after record 5 consistently (every hash and link
    right, the head moved too) is caught by the signed checkpoint at record 10."""
    records = list(logged.audit_store.records())
    forged = [replace(r.entry, bytes_sent=0) if r.seq == 6 else r.entry for r in records[5:]]
    rechained = chain(forged, prev_hash=records[4].hash, first_seq=6)
    with logged.engine.begin() as conn:
        for r in rechained:
            conn.execute(
                text("UPDATE audit_log SET entry = :e, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"e": entry_json(r.entry), "p": r.prev_hash, "h": r.hash, "s": r.seq},
            )
        conn.execute(
            text("UPDATE audit_state SET head_hash = :h WHERE id = 1"), {"h": rechained[-1].hash}
        )
    code, out = run_verify(settings, capsys)
    assert code == 1 and "(checkpoint)" in out, out
    first = out.split("FIRST BAD RECORD: ", 1)[1]
    assert int(first.split(" ", 1)[0]) <= 10  # named within the span the checkpoint vouched for


def test_forged_checkpoint_is_caught(
    logged: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint row whose signature was not made by the server's key is refused."""
    sql(logged, "UPDATE audit_checkpoints SET signature = 'A' || substr(signature, 2)")
    code, out = run_verify(settings, capsys)
    assert code == 1 and "(checkpoint)" in out, out


def test_pruned_log_still_verifies(
    logged: Runtime, settings: Settings, clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audit retention cuts the log at a checkpoint whose records are all old enough; what is
    left verifies clean."""
    records = list(logged.audit_store.records())
    dropped = logged.audit_store.prune(records[30].entry.at_ms)  # older than record 31
    assert dropped == 30  # up to the checkpoint at record 30 (the next one, 40, is too new)
    code, out = run_verify(settings, capsys)
    assert code == 0, out
    assert "from seq 31" in out
