"""Audit hash chain: canonical encoding, checkpoints, and naming the first tampered record."""

from __future__ import annotations

import os
import stat
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tapevault.checkpointlog import read_text_lines
from tapevault.core.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    canonical_bytes,
    chain,
    record_hash,
)
from tapevault.core.auditverify import VerifyReport, verify
from tapevault.core.checkpoints import (
    Checkpoint,
    CheckpointSigner,
    checkpoint_message,
    load_or_create_signer,
    load_public_keys,
    verify_checkpoint_signature,
)
from tapevault.core.journal import (
    GENESIS_LINK,
    CheckpointMerge,
    JournalReader,
    format_line,
    line_hash,
)
from tests.auditentries import FAKE, KEYS, SIGNER, make_entry

N = 50
ENTRIES = [make_entry(i) for i in range(N)]
CLEAN = chain(ENTRIES, prev_hash=GENESIS_HASH, first_seq=1)


def checkpoints(rows: list[AuditRecord], every: int = 10) -> list[Checkpoint]:
    """Checkpoints every ``every`` records, as the server would have signed them."""
    return [SIGNER.sign(r.seq, r.hash, r.seq) for r in rows if r.seq % every == 0]


CPS = checkpoints(CLEAN)


def renumber(rows: list[AuditRecord], first: int = 1) -> list[AuditRecord]:
    """What `UPDATE ... SET seq = ...` does to close a gap or make room."""
    return [replace(r, seq=first + i) for i, r in enumerate(rows)]


def run(rows: list[AuditRecord], cps: list[Checkpoint] | None = None) -> VerifyReport:
    """Verify with the clean checkpoints unless told otherwise."""
    return verify(iter(rows), CPS if cps is None else cps, KEYS)


def first(report: VerifyReport) -> tuple[str, int]:
    """The first finding as (kind, seq)."""
    assert report.findings, "tampering went unnoticed"
    return report.findings[0].kind, report.findings[0].seq


def edited(rows: list[AuditRecord], seq: int, *, rehash: bool = False) -> list[AuditRecord]:
    """Change record ``seq``'s status (and optionally recompute its hash)."""
    out = list(rows)
    old = out[seq - 1]
    entry = replace(old.entry, status=299)
    digest = record_hash(old.seq, entry, old.prev_hash) if rehash else old.hash
    out[seq - 1] = replace(old, entry=entry, hash=digest)
    return out


# --- encoding and chaining ------------------------------------------------------------------------


def test_canonical_encoding_is_pinned() -> None:
    """A fixed entry encodes and hashes to fixed bytes, so stored logs stay verifiable."""
    entry = AuditEntry(
        at_ms=1_700_000_000_000,
        action="media.playback",
        status=206,
        actor_kind="signed_url",
        ranges=((0, 99),),
        user_agent="é",
        detail={"b": [1, True, None], "a": "x"},
    )
    expected = (
        '{"action":"media.playback","actor_id":null,"actor_kind":"signed_url",'
        '"at_ms":1700000000000,"bytes_sent":0,"client_ip":null,'
        '"detail":{"a":"x","b":[1,true,null]},"error":null,"mode":null,'
        f'"prev_hash":"{GENESIS_HASH}","provider_id":null,"ranges":[[0,99]],'
        '"recording_id":null,"request_id":null,"seq":7,"session_id":null,"status":206,'
        '"tenant_id":null,"user_agent":"é"}'
    ).encode()
    assert canonical_bytes(7, entry, GENESIS_HASH) == expected
    assert record_hash(7, entry, GENESIS_HASH) == (
        "f60968425098371bcf1590d1ef2abfd86f85d767b81f73d6c586bde6907307a8"
    )


def test_seq_and_prev_hash_are_covered() -> None:
    """The same entry hashes differently under another seq or another prev_hash."""
    entry = ENTRIES[0]
    base = record_hash(1, entry, GENESIS_HASH)
    assert record_hash(2, entry, GENESIS_HASH) != base
    assert record_hash(1, entry, "1" * 64) != base


@pytest.mark.parametrize(
    "entry",
    [
        AuditEntry(at_ms=1.5, action="a", status=200),  # type: ignore[arg-type]
        AuditEntry(at_ms=1, action="a", status=200, detail={"x": 0.5}),
        AuditEntry(at_ms=1, action="a", status=200, detail={"x": [1, {"y": 2.0}]}),
        AuditEntry(at_ms=1, action="a", status=200, ranges=((0, 1.0),)),  # type: ignore[arg-type]
        AuditEntry(at_ms=1, action="a", status=200, bytes_sent=True),
        AuditEntry(at_ms=1, action="a", status=200, detail={1: "non-string key"}),  # type: ignore[dict-item]
    ],
)
def test_canonical_rejects_floats_and_non_json(entry: AuditEntry) -> None:
    """Floats (and bools posing as ints, non-string keys) are refused with ValueError."""
    with pytest.raises(ValueError):
        canonical_bytes(1, entry, GENESIS_HASH)


def test_chain_links_consecutive_seqs() -> None:
    """chain() numbers from first_seq and links each record to the one before."""
    rows = chain(ENTRIES[:3], prev_hash="a" * 64, first_seq=10)
    assert [r.seq for r in rows] == [10, 11, 12]
    assert rows[0].prev_hash == "a" * 64
    assert rows[1].prev_hash == rows[0].hash and rows[2].prev_hash == rows[1].hash
    assert all(r.hash == record_hash(r.seq, r.entry, r.prev_hash) for r in rows)


# --- clean logs -----------------------------------------------------------------------------------


def test_clean_chain_verifies() -> None:
    """An untouched chain with its checkpoints is ok and reports its head."""
    report = run(CLEAN)
    assert report.ok, report.findings
    assert (report.records, report.checkpoints) == (N, len(CPS))
    assert (report.head_seq, report.head_hash) == (N, CLEAN[-1].hash)


def test_empty_log_verifies() -> None:
    """No records and no checkpoints is a clean (empty) log."""
    report = verify([], [], KEYS)
    assert report.ok and report.head_seq is None and report.head_hash is None


def test_retained_suffix_verifies_from_known_hash() -> None:
    """After pruning, the first kept record links to a known hash; older checkpoints are skipped."""
    report = verify(CLEAN[10:], CPS, KEYS, first_prev_hash=CLEAN[9].hash, first_seq=11)
    assert report.ok, report.findings
    wrong = verify(CLEAN[10:], CPS, KEYS, first_prev_hash=GENESIS_HASH, first_seq=11)
    assert first(wrong) == ("modified", 11)
    assert len(wrong.findings) == 1


# --- tampering with the rows ----------------------------------------------------------------------


@pytest.mark.parametrize("seq", [1, 20, 37, N])
def test_field_modified(seq: int) -> None:
    """An edited field without a new hash is "modified" at that record, and only there."""
    report = run(edited(CLEAN, seq))
    assert first(report) == ("modified", seq)
    assert len(report.findings) == 1
    assert f"record {seq} was modified" in report.findings[0].message


@pytest.mark.parametrize("column", ["hash", "prev_hash", "seq_detail"])
def test_other_columns_modified(column: str) -> None:
    """Editing the stored hash, the prev_hash or a nested detail value is "modified" there too."""
    rows = list(CLEAN)
    old = rows[24]
    if column == "hash":
        rows[24] = replace(old, hash="b" * 64)
    elif column == "prev_hash":
        rows[24] = replace(old, prev_hash="c" * 64)
    else:
        rows[24] = replace(old, entry=replace(old.entry, detail={"n": 24, "ok": False}))
    report = run(rows)
    assert first(report) == ("modified", 25)
    assert len(report.findings) == 1


@pytest.mark.parametrize("seq", [1, 20, N - 1])
def test_modified_and_rehashed(seq: int) -> None:
    """A re-hashed edit shows as the next link breaking, reported at the edited record."""
    report = run(edited(CLEAN, seq, rehash=True))
    assert first(report) == ("modified", seq)
    assert "hash recomputed" in report.findings[0].message
    assert len(report.findings) == 1


def test_rehashed_last_record_needs_a_checkpoint() -> None:
    """Nothing links to the last record, so only a checkpoint over it catches a re-hash."""
    rows = edited(CLEAN, N, rehash=True)
    assert run(rows, cps=[]).ok
    assert first(run(rows)) == ("checkpoint", 41)


@pytest.mark.parametrize("seq", [1, 20, N - 1])
def test_deleted_without_renumbering(seq: int) -> None:
    """A gap in seq is "removed" at the missing seq."""
    rows = [r for r in CLEAN if r.seq != seq]
    report = run(rows)
    assert first(report) == ("removed", seq)
    assert report.findings[0].message == f"record {seq} is missing"
    assert len(report.findings) == 1


@pytest.mark.parametrize("seq", [1, 20, N - 1])
def test_deleted_with_renumbering(seq: int) -> None:
    """Closing the gap by renumbering still reads as "removed" at the missing seq."""
    rows = renumber([r for r in CLEAN if r.seq != seq])
    report = run(rows)
    assert first(report) == ("removed", seq)
    assert len(report.findings) == 1


def test_several_deleted_with_renumbering() -> None:
    """Ten consecutive deletions, renumbered away, are one "removed" finding for all ten."""
    rows = renumber([r for r in CLEAN if not 15 <= r.seq <= 24])
    report = run(rows)
    assert first(report) == ("removed", 15)
    assert report.findings[0].message == "records 15 to 24 are missing"
    assert len(report.findings) == 1


def _insert(seq: int, *, valid: bool, linked: bool = True) -> list[AuditRecord]:
    prev = CLEAN[seq - 2].hash if seq > 1 else GENESIS_HASH
    if not linked:
        prev = "d" * 64
    digest = record_hash(seq, FAKE, prev) if valid else "e" * 64
    rows = list(CLEAN)
    rows.insert(seq - 1, AuditRecord(seq, FAKE, prev, digest))
    return renumber(rows)


@pytest.mark.parametrize("seq", [1, 20, N])
@pytest.mark.parametrize("valid", [True, False], ids=["valid-hash", "invalid-hash"])
def test_inserted_with_renumbering(seq: int, valid: bool) -> None:
    """A row inserted at k, later rows renumbered up, is "inserted" at k either way."""
    report = run(_insert(seq, valid=valid))
    assert first(report) == ("inserted", seq)
    assert len(report.findings) == 1


def test_inserted_with_valid_hash_and_unrelated_link() -> None:
    """A valid-hash fake with a made-up prev_hash is "inserted", not blamed on its neighbour."""
    report = run(_insert(20, valid=True, linked=False))
    assert first(report) == ("inserted", 20)
    assert len(report.findings) == 1


def test_run_of_inserted_rows() -> None:
    """Three forged rows chained to each other are one "inserted" finding."""
    prev = CLEAN[18].hash
    fakes = []
    for seq in (20, 21, 22):
        entry = replace(FAKE, at_ms=seq)
        fakes.append(AuditRecord(seq, entry, prev, record_hash(seq, entry, prev)))
        prev = fakes[-1].hash
    rows = renumber(CLEAN[:19] + fakes + CLEAN[19:])
    report = run(rows)
    assert first(report) == ("inserted", 20)
    assert report.findings[0].message.startswith("records 20 to 22 were inserted")
    assert len(report.findings) == 1


def _swap_seq(a: int, b: int) -> list[AuditRecord]:
    rows = list(CLEAN)
    rows[a - 1], rows[b - 1] = replace(rows[a - 1], seq=b), replace(rows[b - 1], seq=a)
    return sorted(rows, key=lambda r: r.seq)  # the database returns them ORDER BY seq


def _swap_columns(a: int, b: int, *, entry_only: bool) -> list[AuditRecord]:
    rows = list(CLEAN)
    ra, rb = rows[a - 1], rows[b - 1]
    if entry_only:
        rows[a - 1], rows[b - 1] = replace(ra, entry=rb.entry), replace(rb, entry=ra.entry)
    else:
        rows[a - 1] = replace(rb, seq=a)
        rows[b - 1] = replace(ra, seq=b)
    return rows


@pytest.mark.parametrize(("a", "b"), [(1, 2), (20, 21), (N - 1, N), (20, 25)])
@pytest.mark.parametrize("how", ["seq", "all-columns", "entry-only"])
def test_two_rows_swapped(a: int, b: int, how: str) -> None:
    """Two rows swapped (by seq, by all other columns, by content) are "reordered" at the lower."""
    # "all-columns" is an UPDATE of every column but seq; "entry-only" leaves the hashes in place
    entry_only = how == "entry-only"
    rows = _swap_seq(a, b) if how == "seq" else _swap_columns(a, b, entry_only=entry_only)
    report = run(rows)
    assert first(report) == ("reordered", a)
    assert len(report.findings) == 1
    assert f"{a} and {b}" in report.findings[0].message


def test_row_moved_later() -> None:
    """One row moved three places later is a single "reordered" finding at its old place."""
    rows = list(CLEAN)
    moved = rows.pop(19)
    rows.insert(22, moved)
    report = run(renumber(rows))
    assert first(report) == ("reordered", 20)
    assert len(report.findings) == 1


def test_appended_fake_with_wrong_hash() -> None:
    """A row appended at the end whose hash does not verify is "modified" at its seq."""
    rows = [*CLEAN, AuditRecord(N + 1, FAKE, CLEAN[-1].hash, "f" * 64)]
    report = run(rows)
    assert first(report) == ("modified", N + 1)
    assert len(report.findings) == 1


@pytest.mark.parametrize(
    ("prev", "kind"),
    [(GENESIS_HASH, "modified"), ("copy-of-previous", "inserted")],
)
def test_appended_fake_with_wrong_prev_hash(prev: str, kind: str) -> None:
    """A self-consistent fake appended with a wrong prev_hash is caught at its own seq."""
    prev_hash = CLEAN[-1].prev_hash if prev == "copy-of-previous" else prev
    fake = AuditRecord(N + 1, FAKE, prev_hash, record_hash(N + 1, FAKE, prev_hash))
    report = run([*CLEAN, fake])
    assert first(report) == (kind, N + 1)
    assert len(report.findings) == 1


def test_replayed_copy_is_inserted() -> None:
    """A verbatim copy of an earlier row appended at the end is "inserted" at its seq."""
    rows = [*CLEAN, replace(CLEAN[9], seq=N + 1)]
    report = run(rows)
    assert first(report) == ("inserted", N + 1)


def test_tampering_at_first_and_last_record() -> None:
    """Edits to both ends are both found, in seq order."""
    rows = edited(edited(CLEAN, 1), N)
    report = run(rows)
    assert [(f.kind, f.seq) for f in report.findings] == [("modified", 1), ("modified", N)]


def test_findings_in_seq_order_after_resync() -> None:
    """Independent tamperings each give exactly one finding, in seq order."""
    rows = edited(CLEAN, 5)
    rows = edited(rows, 15, rehash=True)
    rows = [r for r in rows if r.seq != 30]
    rows = renumber(rows)
    rows[39], rows[40] = replace(rows[40], seq=40), replace(rows[39], seq=41)
    report = run(rows)
    assert [(f.kind, f.seq) for f in report.findings] == [
        ("modified", 5),
        ("modified", 15),
        ("removed", 30),
        ("reordered", 40),
    ]


def test_seq_renumbered_without_deletion() -> None:
    """Shifting the seq column alone (no row removed) is "modified" where the shift starts."""
    rows = CLEAN[:29] + [replace(r, seq=r.seq + 1000) for r in CLEAN[29:]]
    report = run(rows)
    assert first(report) == ("modified", 30)
    assert "renumbered to 1030" in report.findings[0].message
    assert len(report.findings) == 1


def test_honest_append_after_reported_renumbering() -> None:
    """A row the server appends after a renumbered deletion adds no second finding."""
    rows = renumber([r for r in CLEAN if r.seq != 20])
    entry = make_entry(99)
    rows.append(AuditRecord(N, entry, rows[-1].hash, record_hash(N, entry, rows[-1].hash)))
    report = run(rows, cps=[])
    assert [(f.kind, f.seq) for f in report.findings] == [("removed", 20)]


def test_garbage_rows_are_findings_not_errors() -> None:
    """Rows holding a float, a non-hex hash or a wrong type are reported, never raised."""
    rows = list(CLEAN)
    rows[9] = replace(rows[9], entry=replace(rows[9].entry, detail={"x": 1.5}))
    rows[19] = replace(rows[19], hash="not a hash")
    rows[29] = replace(rows[29], entry=replace(rows[29].entry, status="200"))  # type: ignore[arg-type]
    report = run(rows)
    assert [(f.kind, f.seq) for f in report.findings] == [
        ("modified", 10),
        ("modified", 20),
        ("modified", 30),
    ]


def test_checkpoints_must_be_ordered_and_limits_valid() -> None:
    """Checkpoints out of size order and max_findings < 1 are caller errors."""
    with pytest.raises(ValueError, match="ascending"):
        run(CLEAN, cps=list(reversed(CPS)))
    with pytest.raises(ValueError):
        verify(CLEAN, CPS, KEYS, max_findings=0)


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        ("modify", [("modified", 20), ("modified", 21)]),
        ("swap", [("modified", 20), ("reordered", 21)]),
    ],
)
def test_rehash_next_to_another_tampering(second: str, expected: list[tuple[str, int]]) -> None:
    """A re-hashed record stays visible when the record that witnesses it is tampered too."""
    rows = edited(CLEAN, 20, rehash=True)
    if second == "modify":
        rows = edited(rows, 21)
    else:
        rows[20], rows[21] = replace(rows[21], seq=21), replace(rows[20], seq=22)
    assert [(f.kind, f.seq) for f in run(rows).findings] == expected


def test_deletion_before_a_modified_record() -> None:
    """A gap right before an edited row is still "removed" first, then "modified"."""
    rows = [r for r in edited(CLEAN, 21) if r.seq != 20]
    assert [(f.kind, f.seq) for f in run(rows).findings] == [("removed", 20), ("modified", 21)]


def test_max_findings_stops_the_scan() -> None:
    """Scanning stops after max_findings findings."""
    long = chain([make_entry(i) for i in range(300)], prev_hash=GENESIS_HASH, first_seq=1)
    for seq in range(2, 300, 2):
        long = edited(long, seq)
    report = verify(long, [], KEYS, max_findings=3)
    assert [f.seq for f in report.findings] == [2, 4, 6]
    assert report.records < 300  # the rest was never read (beyond the lookahead window)


# --- checkpoints ----------------------------------------------------------------------------------


def test_truncated_end_with_checkpoint_beyond_head() -> None:
    """Rows cut from the end are "removed" at head+1 when a checkpoint covered them."""
    report = run(CLEAN[:45])
    assert first(report) == ("removed", 46)
    assert "records 46 to 50 are missing" in report.findings[0].message
    assert len(report.findings) == 1
    assert run(CLEAN[:45], cps=checkpoints(CLEAN[:45])).ok


def test_suffix_rewrite_caught_only_by_checkpoint() -> None:
    """A consistently re-chained suffix passes the chain check; the checkpoint names the stretch."""
    entries = list(ENTRIES)
    entries[32] = replace(entries[32], status=200, error=None, actor_id="someone-else")
    rewritten = CLEAN[:32] + chain(entries[32:], prev_hash=CLEAN[31].hash, first_seq=33)
    assert run(rewritten, cps=[]).ok
    report = run(rewritten)
    assert first(report) == ("checkpoint", 31)
    assert report.findings[0].message.startswith("records after checkpoint 30 up to 40")
    assert len(report.findings) == 1


def test_full_rewrite_caught_from_the_start() -> None:
    """Rewriting everything is reported from the first retained record."""
    entries = [replace(e, actor_id="x") for e in ENTRIES]
    report = run(chain(entries, prev_hash=GENESIS_HASH, first_seq=1))
    assert first(report) == ("checkpoint", 1)
    assert len(report.findings) == 1


def test_checkpoint_with_bad_signature() -> None:
    """A checkpoint whose signature does not verify is reported at its size."""
    cps = list(CPS)
    sig = cps[2].signature
    cps[2] = replace(cps[2], signature=("A" if sig[0] != "A" else "B") + sig[1:])
    report = run(CLEAN, cps=cps)
    assert first(report) == ("checkpoint", 30)
    assert "invalid signature" in report.findings[0].message
    assert len(report.findings) == 1


def test_checkpoint_with_altered_head_or_size() -> None:
    """Changing a signed field of a checkpoint makes its signature fail."""
    cps = list(CPS)
    cps[1] = replace(cps[1], size=21, head_hash=CLEAN[20].hash)
    assert first(run(CLEAN, cps=cps)) == ("checkpoint", 21)
    assert not verify_checkpoint_signature(cps[1], KEYS)


def test_checkpoint_with_unknown_key() -> None:
    """A checkpoint signed by a key that is not trusted is reported at its size."""
    stranger = CheckpointSigner(Ed25519PrivateKey.generate())
    cps = [*CPS[:2], stranger.sign(25, CLEAN[24].hash, 25), *CPS[2:]]
    report = run(CLEAN, cps=cps)
    assert first(report) == ("checkpoint", 25)
    assert "unknown key" in report.findings[0].message


def test_checkpoint_at_tampered_record_adds_no_second_finding() -> None:
    """A re-hash under a checkpoint is one "modified" finding, not also a checkpoint one."""
    report = run(edited(CLEAN, 30, rehash=True))
    assert [(f.kind, f.seq) for f in report.findings] == [("modified", 30)]


def test_checkpoint_signature_round_trip() -> None:
    """A signed checkpoint verifies with the signer's PEM and fails with any other key."""
    cp = SIGNER.sign(10, CLEAN[9].hash, 123)
    keys = load_public_keys([SIGNER.public_key_pem()])
    assert list(keys) == [SIGNER.key_id] and len(SIGNER.key_id) == 16
    assert verify_checkpoint_signature(cp, keys)
    assert len(cp.signature) == 86 and "=" not in cp.signature
    assert not verify_checkpoint_signature(replace(cp, at_ms=124), keys)
    assert not verify_checkpoint_signature(cp, {})
    assert checkpoint_message(10, CLEAN[9].hash, 123).startswith(b"tapevault-audit-checkpoint-v1\n")
    with pytest.raises(ValueError):
        checkpoint_message(10, "not-a-hash", 123)


# --- key files ------------------------------------------------------------------------------------


def test_key_file_created_0600_and_reloaded(tmp_path: Path) -> None:
    """A missing key file is created with mode 0600; loading it again gives the same key id."""
    path = tmp_path / "audit-checkpoint.pem"
    signer = load_or_create_signer(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    again = load_or_create_signer(path)
    assert again.key_id == signer.key_id
    cp = signer.sign(1, CLEAN[0].hash, 1)
    assert verify_checkpoint_signature(cp, load_public_keys([again.public_key_pem()]))


@pytest.mark.parametrize("content", [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"])
def test_invalid_key_file_names_the_path(tmp_path: Path, content: bytes) -> None:
    """A damaged key file raises ValueError naming it, and is never replaced."""
    path = tmp_path / "audit.pem"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=str(path)):
        load_or_create_signer(path)
    assert path.read_bytes() == content


def test_unreadable_key_file_names_the_path(tmp_path: Path) -> None:
    """A path that cannot be read (here: a directory) raises ValueError naming it."""
    path = tmp_path / "audit.pem"
    path.mkdir()
    with pytest.raises(ValueError, match=str(path)):
        load_or_create_signer(path)


def test_public_keys_reject_other_algorithms() -> None:
    """Only Ed25519 public keys are accepted."""
    with pytest.raises(ValueError):
        load_public_keys(["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])


# --- one pass, bounded memory ---------------------------------------------------------------------


def test_verify_streams_with_bounded_memory() -> None:
    """200,000 generated records verify without being held in memory."""
    count = 200_000
    cycle = ENTRIES[:8]  # varied content; each record still hashes uniquely (seq, prev_hash)

    # The hashes are computed before tracing (like the column values a database would hand
    # back), so the traced pass measures verify and the records it is streamed, not this setup.
    hashes = [GENESIS_HASH]
    for seq in range(1, count + 1):
        hashes.append(record_hash(seq, cycle[seq % 8], hashes[-1]))

    def generate() -> Iterator[AuditRecord]:
        for seq in range(1, count + 1):
            yield AuditRecord(seq, cycle[seq % 8], hashes[seq - 1], hashes[seq])

    cps = [SIGNER.sign(seq, hashes[seq], seq) for seq in range(20_000, count + 1, 20_000)]
    tracemalloc.start()
    try:
        report = verify(generate(), cps, KEYS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok, report.findings
    assert (report.records, report.checkpoints, report.head_seq) == (count, len(cps), count)
    assert report.head_hash == hashes[count]
    assert peak < 50 * 1024 * 1024


# --- any single tampering, anywhere ---------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    op=st.sampled_from(["modify", "rehash", "delete", "delete-renumber", "insert", "swap"]),
    seq=st.integers(min_value=1, max_value=N - 1),
    distance=st.integers(min_value=1, max_value=8),
)
def test_any_single_tampering_is_named(op: str, seq: int, distance: int) -> None:
    """Each kind of tampering, at any position, is the first finding with the right kind and seq."""
    expected = {
        "modify": "modified",
        "rehash": "modified",
        "delete": "removed",
        "delete-renumber": "removed",
        "insert": "inserted",
        "swap": "reordered",
    }[op]
    if op == "modify":
        rows = edited(CLEAN, seq)
    elif op == "rehash":
        rows = edited(CLEAN, seq, rehash=True)
    elif op == "delete":
        rows = [r for r in CLEAN if r.seq != seq]
    elif op == "delete-renumber":
        rows = renumber([r for r in CLEAN if r.seq != seq])
    elif op == "insert":
        rows = _insert(seq, valid=distance % 2 == 0, linked=distance % 3 != 0)
    else:
        rows = _swap_seq(seq, min(seq + distance, N))
    for cps in ([], CPS):
        report = run(rows, cps=cps)
        assert first(report) == (expected, seq), report.findings
        assert len(report.findings) == 1, report.findings


# --- the checkpoint journal (core/journal.py, checkpointlog.py) ----------------------------------


def journal_texts(sizes: list[int]) -> list[str]:
    """Journal lines for checkpoints of these sizes, in this order, each linked to the last."""
    lines, prev = [], GENESIS_LINK
    for size in sizes:
        line = format_line(SIGNER.sign(size, f"{size:064x}", 1000 + size), prev, SIGNER)
        lines.append(line + "\n")
        prev = line_hash(line)
    return lines


def test_journal_round_trip_in_size_order() -> None:
    """Lines written slightly out of order (processes appending together) read back sorted,
    every signature and link good."""
    reader = JournalReader(journal_texts([1, 3, 2, 5, 4]), KEYS, linked=True)
    assert [cp.size for cp in reader] == [1, 2, 3, 4, 5]
    assert reader.problems == [] and reader.lines == 5


def test_journal_line_far_out_of_order_is_a_problem() -> None:
    """A line further out of place than the reorder window is reported, not silently sorted."""
    sizes = [*range(2, JournalReader.REORDER + 10), 1]
    reader = JournalReader(journal_texts(sizes), KEYS, linked=True)
    assert [cp.size for cp in reader] == sizes[:-1]
    assert reader.problems == [f"journal line {len(sizes)} (checkpoint 1) is out of order"]


def test_journal_copy_with_prefixes_and_other_lines() -> None:
    """A process-log copy: prefixes and unrelated lines are skipped, links are not required."""
    texts = journal_texts([1, 2, 3])
    copy = ["INFO starting\n", f"2026 INFO tapevault.audit: audit checkpoint: {texts[2]}"]
    reader = JournalReader(copy, KEYS, linked=False)
    assert [cp.size for cp in reader] == [3] and reader.problems == []


def test_overlong_journal_line_is_cut_and_reported(tmp_path: Path) -> None:
    """A hostile 8 MiB line is read at most MAX_LINE at a time and reported as one bad line."""
    path = tmp_path / "journal.log"
    texts = journal_texts([1, 2])
    path.write_text(texts[0] + "x" * (8 << 20) + "\n" + texts[1])
    tracemalloc.start()
    try:
        reader = JournalReader(read_text_lines(path), KEYS, linked=True)
        assert [cp.size for cp in reader] == [1, 2]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert reader.problems[0] == "journal line 2 is not a checkpoint line"
    assert "does not follow" in reader.problems[1]


def test_merge_names_checkpoints_missing_from_the_database() -> None:
    """Outside checkpoints of the retained log without a row are deleted rows; those before the
    retained log's start (pruned) are not."""
    cps = [SIGNER.sign(size, f"{size:064x}", size) for size in (5, 10, 20, 30)]
    merged = CheckpointMerge([cps[1], cps[3]], [cps], first_seq=8)
    assert list(merged) == cps
    assert [f.seq for f in merged.deleted] == [20]


def test_fake_prune_without_its_checkpoint_is_caught() -> None:
    """Records removed from the start with the log's start moved past them, as pruning does,
    but not at a signed checkpoint (pruning always cuts at one): named as removed."""
    report = verify(CLEAN[12:], CPS, KEYS, first_prev_hash=CLEAN[11].hash, first_seq=13)
    assert first(report) == ("removed", 12)
    empty = verify([], [], KEYS, first_prev_hash=CLEAN[11].hash, first_seq=13)
    assert first(empty) == ("removed", 12)
