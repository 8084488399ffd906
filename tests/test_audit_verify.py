"""`tapevault audit verify` against a log tampered with directly in the database, on SQLite
and PostgreSQL: each change, deletion, insertion and reordering is named at its record."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tapevault import cli
from tapevault.config import Settings
from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.audit import AuditEntry, chain
from tapevault.core.checkpoints import load_or_create_signer
from tapevault.core.clock import FixedClock
from tapevault.db.auditstore import entry_json
from tapevault.runtime import Runtime, open_runtime
from tests.dialects import asgi_client
from tests.support import audit_verify

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


def run_verify(
    settings: Settings, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    return audit_verify(settings, capsys, *extra)


def sql(rt: Runtime, *statements: str) -> None:
    with rt.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)  # as typed: no bind-parameter parsing


def test_untouched_log_verifies(
    logged: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log nobody touched verifies clean, checkpoints and the journal included."""
    code, out = run_verify(settings, capsys)
    assert code == 0, out
    assert f"{RECORDS} record(s)" in out and "verifies" in out
    assert "3 checkpoint(s)" in out  # at records 10 and 30, and the one close() writes
    assert "audit-checkpoints.log: 3 checkpoint line(s)" in out  # the journal has them too


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


# --- an attacker who can write the database: the checkpoint journal outside it ----------------


def journal_path(settings: Settings) -> Path:
    return settings.data_dir / "audit-checkpoints.log"


def rechain_from(rt: Runtime, first: int, entries: list[AuditEntry]) -> None:
    """Rewrite records ``first``.. consistently (hashes, links, seqs, head), as an attacker
    holding the database but not the signing key would: every row verifies on its own."""
    with rt.engine.begin() as conn:
        prev = conn.execute(
            text("SELECT hash FROM audit_log WHERE seq = :s"), {"s": first - 1}
        ).scalar_one()
        conn.execute(text("DELETE FROM audit_log WHERE seq >= :s"), {"s": first})
        forged = chain(entries, prev_hash=prev, first_seq=first)
        for r in forged:
            conn.execute(
                text(
                    "INSERT INTO audit_log (seq, at_ms, tenant_id, action, actor_id, session_id, "
                    "recording_id, entry, prev_hash, hash) VALUES (:s, :a, :t, :ac, :ai, :si, "
                    ":ri, :e, :p, :h)"
                ),
                {
                    "s": r.seq,
                    "a": r.entry.at_ms,
                    "t": r.entry.tenant_id,
                    "ac": r.entry.action,
                    "ai": r.entry.actor_id,
                    "si": r.entry.session_id,
                    "ri": r.entry.recording_id,
                    "e": entry_json(r.entry),
                    "p": r.prev_hash,
                    "h": r.hash,
                },
            )
        head = forged[-1] if forged else None
        conn.execute(
            text("UPDATE audit_state SET head_seq = :s, head_hash = :h WHERE id = 1"),
            {"s": head.seq if head else first - 1, "h": head.hash if head else prev},
        )


def first_bad(out: str) -> int:
    assert "FIRST BAD RECORD: " in out, out
    return int(out.split("FIRST BAD RECORD: ", 1)[1].split(" ", 1)[0])


def test_deleted_checkpoints_and_consistent_rewrite_are_caught(
    logged: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bypass 1: every checkpoint row deleted and the records after 5 rewritten consistently;
    the journal's checkpoints still vouch for the originals."""
    records = list(logged.audit_store.records())
    sql(logged, "DELETE FROM audit_checkpoints")
    rechain_from(
        logged, 6, [replace(r.entry, bytes_sent=0) if r.seq == 6 else r.entry for r in records[5:]]
    )
    code, out = run_verify(settings, capsys)
    assert code == 1, out
    assert first_bad(out) <= 10, out  # within the span checkpoint 10 vouched for
    assert "checkpoint 10 was deleted from the database" in out, out


def test_erased_playback_and_renumbering_are_caught(
    logged: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bypass 2: a playback record erased, the later ones renumbered and re-chained, the newest
    checkpoint row deleted and the head fixed; the journal's checkpoint 40 gives it away."""
    records = list(logged.audit_store.records())
    assert records[34].entry.action == Action.MEDIA_PLAYBACK.value
    sql(logged, "DELETE FROM audit_checkpoints WHERE size > 30")
    rechain_from(logged, 35, [r.entry for r in records[35:]])
    code, out = run_verify(settings, capsys)
    assert code == 1, out
    assert 31 <= first_bad(out) <= 40, out


def test_truncated_tail_with_state_fixed_is_caught(
    logged: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bypass 3: the newest records deleted, their checkpoint row too, audit_state moved back:
    the database is shorter than the journal's newest checkpoint."""
    sql(logged, "DELETE FROM audit_checkpoints WHERE size > 30")
    rechain_from(logged, 36, [])
    code, out = run_verify(settings, capsys)
    assert code == 1 and "FIRST BAD RECORD: 36 (removed)" in out, out


@pytest.mark.parametrize("rollback", ["truncated", "rewritten"])
def test_start_refuses_to_sign_over_a_head_the_journal_contradicts(
    logged: Runtime, settings: Settings, clock: FixedClock, rollback: str
) -> None:
    """A database rolled back behind the journal (or rewritten under it) gets no new checkpoint:
    the next start refuses to sign, says why, and health tells."""
    records = list(logged.audit_store.records())
    sql(logged, "DELETE FROM audit_checkpoints WHERE size > 30")
    if rollback == "truncated":
        rechain_from(logged, 31, [])
    else:
        rechain_from(logged, 36, [replace(r.entry, status=200) for r in records[35:]])
    lines = journal_path(settings).read_text()
    rt = open_runtime(settings, clock=clock)
    try:
        assert rt.audit is not None
        rt.recover()  # what a start runs first
        problem = rt.audit.checkpoint_problem
        assert problem is not None and "checkpoint 40" in problem, problem
        rt.context.access_log.commit(
            AccessEvent(Action.AUDIT_READ, Actor(kind="cli"), 200, at_ms=int(clock.now() * 1000))
        )
        assert rt.audit.checkpoint() is None

        async def health() -> httpx.Response:
            async with asgi_client(rt) as client:
                return await client.get("/healthz")

        response = asyncio.run(health())
        assert response.status_code == 503, response.text
        assert "checkpoint 40" in response.json()["audit"]
    finally:
        rt.close()
    assert journal_path(settings).read_text() == lines  # nothing signed over the forged head
    assert logged.audit_store.last_checkpoint().size == 30  # type: ignore[union-attr]


def test_new_records_are_checkpointed_within_seconds(settings: Settings, clock: FixedClock) -> None:
    """Records since the last checkpoint reach the journal within a tick of the interval, without
    a shutdown; an idle log adds no line."""
    assert Settings.load({}, env={}).audit_checkpoint_seconds <= 5
    fast = replace(settings, audit_checkpoint_seconds=1)
    rt = open_runtime(fast, clock=clock)
    try:
        rt.context.access_log.commit(
            AccessEvent(Action.AUDIT_READ, Actor(kind="cli"), 200, at_ms=int(clock.now() * 1000))
        )
        deadline = time.monotonic() + 10
        # Durable now; the integrator (no request, no shutdown) sequences it within its interval.
        while rt.audit_store.state().head_seq != 1:
            assert time.monotonic() < deadline, "the record was not integrated"
            time.sleep(0.02)
        while " 1 " not in _read(journal_path(settings)):
            assert time.monotonic() < deadline, "no checkpoint covered the new record"
            time.sleep(0.05)
        assert rt.audit is not None and rt.audit.checkpoint() is None  # nothing new: no line
        assert len(_read(journal_path(settings)).splitlines()) == 1
    finally:
        rt.close()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("change", ["removed", "altered", "garbled"])
def test_journal_line_removed_or_changed_is_caught(
    logged: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    """A journal line taken out, edited or garbled is reported, though the database is intact."""
    path = journal_path(settings)
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    if change == "removed":
        del lines[1]
    elif change == "altered":
        lines[1] = lines[1].replace(" 30 ", " 29 ", 1)
    else:
        lines[1] = lines[1][:40] + "\n"
    path.write_text("".join(lines))
    code, out = run_verify(settings, capsys)
    assert code == 1, out
    assert "journal line 2" in out, out


def test_witness_copy_is_checked(
    logged: Runtime, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--checkpoints FILE: a copy kept elsewhere (here: process-log lines) still catches a
    rewrite after the local journal was emptied too."""
    witness = tmp_path / "witness.log"
    witness.write_text(
        "".join(
            f"2026-12-02 INFO tapevault.audit: audit checkpoint: {line}"
            for line in journal_path(settings).read_text().splitlines(keepends=True)
        )
    )
    journal_path(settings).unlink()
    sql(logged, "DELETE FROM audit_checkpoints WHERE size > 30")
    rechain_from(logged, 36, [])
    code, out = run_verify(settings, capsys, "--checkpoints", str(witness))
    assert code == 1 and "FIRST BAD RECORD: 36 (removed)" in out, out


# --- read-only commands -----------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``root``: its bytes, mtime and mode (a write of any kind changes it)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    } | {str(p.relative_to(root)) + "/": (b"", 0, 0) for p in root.rglob("*") if p.is_dir()}


def read_only_url(settings: Settings) -> str:
    """PostgreSQL refuses every write on this URL's connections; SQLite is checked by files."""
    if settings.is_sqlite:
        return settings.database_url
    return settings.database_url + "?options=-c%20default_transaction_read_only%3Don"


@pytest.mark.parametrize("command", ["verify", "export"])
def test_read_only_commands_write_nothing(
    logged: Runtime, settings: Settings, tmp_path: Path, command: str
) -> None:
    """`audit verify` and `audit export` on a copy of the data directory without its key file
    (read-only database connections on PostgreSQL): no file created, changed or touched, no row
    written, and they succeed."""
    copy = tmp_path / "copy"
    shutil.copytree(settings.data_dir, copy)
    public = tmp_path / "public.pem"
    public.write_text(load_or_create_signer(settings.audit_key_path).public_key_pem())
    (copy / "audit-signing.pem").unlink()
    url = read_only_url(settings)
    if settings.is_sqlite:
        url = f"sqlite:///{copy / 'meta.db'}"
        shutil.copy(settings.database_url.removeprefix("sqlite:///"), copy / "meta.db")
    before = snapshot(copy)
    rows = _counts(logged)
    args = ["--data-dir", str(copy), "--database-url", url]
    if command == "verify":
        argv = ["audit", "verify", *args, "--public-key", str(public)]
    else:
        argv = ["audit", "export", *args, "--output", str(tmp_path / "out.jsonl")]
    assert cli.main(argv) == 0
    assert snapshot(copy) == before
    assert _counts(logged) == rows
    if command == "export":
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == RECORDS


def _counts(rt: Runtime) -> tuple[int, ...]:
    with rt.engine.connect() as conn:
        return tuple(
            conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608
            for table in ("audit_log", "audit_checkpoints", "audit_pending", "alembic_version")
        )


def _event(clock: FixedClock) -> AccessEvent:
    return AccessEvent(Action.AUDIT_READ, Actor(kind="cli"), 200, at_ms=int(clock.now() * 1000))


def test_append_cut_by_a_crash_is_a_note_not_tampering(
    logged: Runtime,
    settings: Settings,
    clock: FixedClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A partial last line (a process killed mid-append) verifies with a note; the next append
    ends it and links past it, and the journal still verifies."""
    path = journal_path(settings)
    with path.open("a") as fh:
        fh.write(path.read_text().splitlines()[-1][:60])
    code, out = run_verify(settings, capsys)
    assert code == 0 and "journal line 4 is incomplete" in out, out
    rt = open_runtime(settings, clock=clock)
    rt.context.access_log.commit(_event(clock))
    rt.close()
    assert len(path.read_text().splitlines()) == 5
    code, out = run_verify(settings, capsys)
    assert code == 0 and "journal line 4 is an incomplete write" in out, out
    assert "5 checkpoint line(s)" not in out and "4 checkpoint line(s)" in out, out


def test_unwritable_journal_keeps_checkpoints_and_recovers(
    settings: Settings, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal that cannot be appended to is logged once; checkpoints still go to the
    database and the process log, and reach the journal again once it is writable."""
    caplog.set_level(logging.INFO, "tapevault.audit")
    path = journal_path(settings)
    rt = open_runtime(settings, clock=clock)
    try:
        assert rt.audit is not None
        path.mkdir()  # appending to a directory fails
        for _ in range(2):
            rt.context.access_log.commit(_event(clock))
            assert rt.audit.checkpoint() is not None
        assert caplog.text.count("could not append audit checkpoint") == 1
        assert caplog.text.count("audit checkpoint: tapevault/audit ") == 2
        path.rmdir()
        rt.context.access_log.commit(_event(clock))
        cp = rt.audit.checkpoint()
        assert cp is not None and f" {cp.size} " in path.read_text()
        assert "reach the journal again" in caplog.text
    finally:
        rt.close()


def test_fake_prune_is_caught(
    logged: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The oldest records deleted and audit_state told the log was pruned there: no signed
    checkpoint vouches for that start, so the removal is named."""
    start_hash = logged.audit_store.hash_at(12)
    sql(logged, "DELETE FROM audit_log WHERE seq <= 12", "DELETE FROM audit_checkpoints")
    with logged.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_state SET first_seq = 13, first_prev_hash = :h"), {"h": start_hash}
        )
    journal_path(settings).unlink()  # even without the journal
    code, out = run_verify(settings, capsys)
    assert code == 1 and "FIRST BAD RECORD: 12 (removed)" in out, out
