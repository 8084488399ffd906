"""The access log's signers: every checkpoint key is listed in the database when it first signs
(``audit_signers``), and ``tapevault audit verify`` trusts the listed keys only as a convenience
that it reports, on SQLite and PostgreSQL. Two nodes (two data directories, one database), a key
file replaced on a node, a signer row forged or altered by someone who can write the database."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from tapevault import cli
from tapevault.config import Settings
from tapevault.core.audit import chain
from tapevault.core.checkpoints import (
    NOTE_ORIGIN,
    CheckpointSigner,
    load_or_create_signer,
    note_vkey,
    parse_vkey,
    signer_record,
)
from tapevault.core.clock import FixedClock
from tapevault.core.signerkeys import MAX_LISTED
from tapevault.db.auditstore import entry_json
from tapevault.runtime import open_runtime
from tests.signers import sign_records, sql
from tests.support import audit_verify


def node_settings(settings: Settings, name: str) -> Settings:
    """Another node of the deployment: its own data directory (name, key file, journal), the
    same database."""
    return Settings.load(
        {
            "data_dir": str(settings.data_dir.with_name(name)),
            "database_url": settings.database_url,
            "public_url": "https://vault.test",
        },
        env={},
    )


def public_pem(settings: Settings, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.pub.pem"
    path.write_text(load_or_create_signer(settings.audit_key_path).public_key_pem())
    return path


def key_id(settings: Settings) -> str:
    return load_or_create_signer(settings.audit_key_path).key_id


def node_name(settings: Settings) -> str:
    return (settings.data_dir / "node-id").read_text().strip()


def signers(settings: Settings) -> list[tuple[str, str | None]]:
    rt = open_runtime(settings, run_migrations=False)
    try:
        return [(s.key_id, s.node) for s in rt.audit_store.signers()]
    finally:
        rt.close()


def load_signer_in_memory() -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.generate())


def test_verifier_key_round_trip() -> None:
    """``parse_vkey`` reads what ``note_vkey`` writes (a base64 key with '+' in it included)
    and refuses a vkey whose hash does not match its key, or of another origin."""
    for _ in range(20):
        signer = load_signer_in_memory()
        vkey = note_vkey(NOTE_ORIGIN, signer.public_key)
        assert parse_vkey(vkey).public_bytes_raw() == signer.public_key.public_bytes_raw()
    name, digest, key = vkey.split("+", 2)
    bad = f"{name}+{'0' * 8 if digest != '0' * 8 else '1' * 8}+{key}"
    for wrong in (bad, f"other/log+{digest}+{key}", "tapevault/audit", f"{name}+{digest}+!!"):
        with pytest.raises(ValueError):
            parse_vkey(wrong)


def test_two_nodes_keys_are_listed_and_verify_says_where_it_trusted_them(
    settings: Settings, clock: FixedClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Node A signs, then node B (its own key file) holds the role and signs: both keys are
    listed with their nodes. On A, `audit verify` passes with no flag, saying B's key was
    trusted from the database only; with keys pinned it trusts only those, and fails while
    B's key is not among them."""
    a, b = settings, node_settings(settings, "node-b")
    sign_records(a, clock, 8)
    sign_records(b, clock, 8)
    sign_records(a, clock, 4)
    assert sorted(signers(a)) == sorted([(key_id(a), node_name(a)), (key_id(b), node_name(b))])

    code, out = audit_verify(a, capsys)
    assert code == 0, out
    assert f"key {key_id(a)}: trusted: this node's key file" in out, out
    assert f"key {key_id(b)}: trusted from the database only (node {node_name(b)!r}" in out, out
    assert "verified with keys trusted only because the database lists them" in out, out
    assert "records after" not in out, out  # A's own key signed the last checkpoint
    code, out = audit_verify(b, capsys)  # on B, A's last checkpoint is vouched by the database
    assert code == 0, out
    assert "records after 16 are vouched for only by checkpoints signed with keys from the " in (
        out
    )

    code, out = audit_verify(a, capsys, "--public-key", str(public_pem(b, tmp_path, "b")))
    assert code == 0, out
    assert f"key {key_id(b)}: trusted: pinned with --public-key" in out, out
    assert "trusted only because the database" not in out, out

    # B's verifier key, as verify printed it, pins as well as its PEM does.
    vkey = tmp_path / "b.vkey"
    vkey.write_text(f"# node B\n{note_vkey(NOTE_ORIGIN, parse_vkey(_vkey_of(out, key_id(b))))}\n")
    code, out = audit_verify(a, capsys, "--public-key", str(vkey))
    assert code == 0, out

    for flags in (["--no-database-keys"], ["--public-key", str(public_pem(a, tmp_path, "a"))]):
        code, out = audit_verify(a, capsys, *flags)
        assert code == 1, out
        assert f"is signed by key {key_id(b)!r}, which is not trusted: the database lists it " in (
            out
        )
        assert f"key {key_id(b)}: NOT trusted: listed in the database" in out, out


def _vkey_of(out: str, key: str) -> str:
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"key {key}:"))
    return lines[at + 1].split("verifier key ", 1)[1]


def test_a_replaced_key_file_is_reported_and_its_old_checkpoints_need_the_old_key(
    settings: Settings, clock: FixedClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A node's key file deleted (a new key made at the next start) or rotated: the old key's
    checkpoints and journal lines verify with its listed key, reported as from the database;
    with the database's keys refused, they are named as signed by a key not trusted."""
    sign_records(settings, clock, 6)
    old = public_pem(settings, tmp_path, "old")
    old_id = key_id(settings)
    settings.audit_key_path.unlink()
    sign_records(settings, clock, 6)
    new_id = key_id(settings)
    assert new_id != old_id
    assert {k for k, _ in signers(settings)} == {old_id, new_id}

    code, out = audit_verify(settings, capsys)
    assert code == 0, out
    assert f"key {old_id}: trusted from the database only (node {node_name(settings)!r}" in out

    code, out = audit_verify(settings, capsys, "--no-database-keys")
    assert code == 1, out
    assert f"is signed by key {old_id!r}, which is not trusted" in out, out
    assert f"journal line 1 (checkpoint 6) is signed by key {old_id!r}" in out, out

    code, out = audit_verify(settings, capsys, "--public-key", str(old))
    assert code == 0, out


def _forge(settings: Settings, intruder: CheckpointSigner, clock: FixedClock) -> None:
    """What someone who can write the database (and holds no node's key) can do: list a key of
    their own, rewrite records from 3 on consistently, drop the checkpoint rows and sign the
    rewritten head themselves."""
    rt = open_runtime(settings, clock=clock, run_migrations=False)
    try:
        store = rt.audit_store
        records = list(store.records())
        forged = chain(
            [replace(r.entry, status=403) for r in records[2:]],
            prev_hash=records[1].hash,
            first_seq=3,
        )
        with rt.engine.begin() as conn:
            for r in forged:
                conn.execute(
                    text(
                        "UPDATE audit_log SET entry = :e, prev_hash = :p, hash = :h WHERE seq = :s"
                    ),
                    {"e": entry_json(r.entry), "p": r.prev_hash, "h": r.hash, "s": r.seq},
                )
            conn.execute(
                text("UPDATE audit_state SET head_hash = :h WHERE id = 1"), {"h": forged[-1].hash}
            )
            conn.execute(text("DELETE FROM audit_checkpoints"))
        store.add_signer(signer_record(intruder, "intruder", 1))
        store.add_checkpoint(intruder.sign(forged[-1].seq, forged[-1].hash, 2))
    finally:
        rt.close()


def test_a_forged_signer_row_is_named_and_only_the_journal_or_a_pin_catches_its_rewrite(
    settings: Settings, clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """The threat the listed keys open: a key listed by someone who wrote the database, and a
    rewritten log signed with it. Verify names the key as trusted from the database only; the
    node's journal (signed by its own key) catches the rewrite; without the journal the
    default passes, saying the checkpoint was vouched for by the database alone, and
    `--no-database-keys` fails."""
    sign_records(settings, clock, 10)
    intruder = load_signer_in_memory()
    _forge(settings, intruder, clock)

    code, out = audit_verify(settings, capsys)
    assert code == 1, out  # the journal's checkpoints were signed over the original records
    assert "FIRST BAD RECORD: 1 (checkpoint)" in out, out
    assert (
        f"checkpoint 10 is signed twice over different heads (key {intruder.key_id} over the "
        f"records as they are, key {key_id(settings)} over others)"
    ) in out, out
    assert f"key {intruder.key_id}: trusted from the database only (node 'intruder'" in out, out

    journal = settings.audit_checkpoint_log_path
    journal.rename(journal.with_name("journal.aside"))
    code, out = audit_verify(settings, capsys)
    assert code == 0, out  # the documented limit of the convenience
    assert "1 checkpoint(s) verified with keys trusted only because the database lists" in out
    assert "no checkpoint was signed by a key trusted independently of the database" in out
    assert f"key {intruder.key_id}: trusted from the database only" in out, out

    code, out = audit_verify(settings, capsys, "--no-database-keys")
    assert code == 1, out
    assert f"signed by key {intruder.key_id!r}, which is not trusted" in out, out


@pytest.mark.parametrize("change", ["other key", "garbage"])
def test_an_altered_signer_row_is_a_failure(
    settings: Settings, clock: FixedClock, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    """A listed row whose verifier key is not its key id's (swapped for another key) or not a
    verifier key at all: `SIGNER ROW`, exit status 1, and the key is not trusted from it."""
    sign_records(settings, clock, 3)
    other = note_vkey(NOTE_ORIGIN, load_signer_in_memory().public_key)
    vkey = other if change == "other key" else "tapevault/audit+00+AA"
    sql(settings, "UPDATE audit_signers SET vkey = :v", v=vkey)
    code, out = audit_verify(settings, capsys)
    assert code == 1, out
    assert f"SIGNER ROW: the row of key {key_id(settings)!r}" in out, out


def test_nodes_sharing_a_key_file_list_it_once(
    settings: Settings, clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two nodes given one key file (TAPEVAULT_AUDIT_KEY_FILE): one row, kept with the node
    that signed first; verify trusts it from the key file and needs nothing from the database."""
    b = Settings.load(
        {
            "data_dir": str(settings.data_dir.with_name("node-b")),
            "database_url": settings.database_url,
            "public_url": "https://vault.test",
            "audit_key_file": str(settings.audit_key_path),
        },
        env={},
    )
    sign_records(settings, clock, 4)
    sign_records(b, clock, 4)
    assert signers(settings) == [(key_id(settings), node_name(settings))]
    code, out = audit_verify(settings, capsys, "--no-database-keys")
    assert code == 0, out


def test_a_flooded_signer_table_is_read_bounded_and_fails(
    settings: Settings, clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows added by the thousand (by someone who writes the database): verify reads at most
    MAX_LISTED + 1 of them, reports a bounded number of problems, and fails."""
    sign_records(settings, clock, 3)
    rt = open_runtime(settings, run_migrations=False)
    try:
        with rt.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_signers (key_id, vkey, node, first_ms) "
                    "VALUES (:k, 'x', NULL, :m)"
                ),
                [{"k": f"flood{i:011d}", "m": 10**12 + i} for i in range(MAX_LISTED + 50)],
            )
    finally:
        rt.close()
    code, out = audit_verify(settings, capsys)
    assert code == 1, out
    assert f"more than {MAX_LISTED} keys are listed as signers" in out, out
    assert out.count("SIGNER ROW:") <= 22, out
    assert "the access log verifies" not in out, out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not a key at all\n", "not a tapevault/audit verifier key"),
        ("# only a comment\n\n", "holds no key"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
    ],
)
def test_a_pinned_key_file_that_holds_no_key_is_refused(
    settings: Settings,
    clock: FixedClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    message: str,
) -> None:
    """A --public-key file that is neither a PEM public key nor verifier keys stops verify
    with a message naming the file (exit 1), rather than pinning nothing."""
    sign_records(settings, clock, 2)
    pinned = tmp_path / "pinned.txt"
    pinned.write_text(content)
    args = ["--data-dir", str(settings.data_dir), "--database-url", settings.database_url]
    code = cli.main(["audit", "verify", *args, "--public-key", str(pinned)])
    assert code == 1
    err = capsys.readouterr().err
    assert str(pinned) in err and message in err, err
