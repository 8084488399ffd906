"""The access log off the request's path: durable first, integrated by one integrator, proved
by an RFC 9162 Merkle tree; on SQLite and PostgreSQL.

The proofs are checked by a verifier written here from RFC 9162 §2.1.3.2 and §2.1.4.2 (and the
signed note from C2SP signed-note), not with tapevault's code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tapevault.config import Settings
from tapevault.core import auditproofs
from tapevault.core import integrator as integrator_module
from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.auditlog import AuditLog
from tapevault.core.checkpoints import load_or_create_signer, note_text
from tapevault.core.clock import FixedClock
from tapevault.core.integrator import Integrator
from tapevault.db.auditstore import SqlAuditStore
from tapevault.db.engine import make_engine
from tapevault.runtime import Runtime, open_runtime
from tests.dialects import asgi_client, customer
from tests.support import audit_verify

# --- an independent verifier (RFC 9162 §2.1.3.2, §2.1.4.2) --------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    if index >= size:
        return False
    fn, sn = index, size - 1
    r = _h(b"\x00" + leaf)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _h(b"\x01" + p + r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _h(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, proof: list[bytes], first_root: bytes, second_root: bytes
) -> bool:
    """RFC 9162 §2.1.4.2, step by step."""
    if first == second:
        return not proof and first_root == second_root
    if first & (first - 1) == 0:  # a power of two: prepend first_hash
        proof = [first_root, *proof]
    if not proof:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _h(b"\x01" + c + fr)
            sr = _h(b"\x01" + c + sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _h(b"\x01" + sr + c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 by its recursive definition."""
    if not leaves:
        return _h(b"")
    if len(leaves) == 1:
        return _h(b"\x00" + leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _h(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def read_note(text: str, key: Ed25519PublicKey) -> tuple[str, int, bytes]:
    """A C2SP signed note: check the Ed25519 signature line, return (origin, size, root)."""
    body, sigs = text.split("\n\n", 1)
    body += "\n"
    line = sigs.strip().split("\n")[0]
    dash, name, sig = line.split(" ")
    assert dash == "\u2014"
    raw = base64.b64decode(sig)
    pub = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw[:4] == _h(name.encode() + b"\n\x01" + pub)[:4], "key hash"
    key.verify(raw[4:], body.encode())  # raises if forged
    origin, size, root = body.rstrip("\n").split("\n")
    return origin, int(size), base64.b64decode(root)


# --- helpers ----------------------------------------------------------------------------------


def event(i: int, tenant: str = "p1") -> AccessEvent:
    return AccessEvent(
        action=Action.SESSION_READ,
        actor=Actor(partner_id=tenant, kind="api_key", token_id=f"k{i}"),
        status=200,
        at_ms=1_800_000_000_000 + i,
        session_id=f"s{i}",
    )


@pytest.fixture
def rt(settings: Settings, clock: FixedClock) -> Iterator[Runtime]:
    runtime = open_runtime(settings, clock=clock)
    try:
        yield runtime
    finally:
        runtime.close()


# --- tests ------------------------------------------------------------------------------------


def test_commit_is_durable_before_it_is_integrated(rt: Runtime) -> None:
    """A commit returns once its record is durable; it has no seq until the integrator runs,
    and then exactly one."""
    audit = rt.audit
    assert audit is not None
    audit.integrator.interval = 3600  # the thread will not run during this test
    audit.integrator.stop()
    audit.commit(event(1))
    assert rt.audit_store.waiting()[0] == 1 and rt.audit_store.state().head_seq == 0
    assert audit.integrator.settle(5)
    assert rt.audit_store.waiting()[0] == 0 and rt.audit_store.state().head_seq == 1


def test_proofs_check_with_an_independent_verifier(
    rt: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """For every tree size up to 21 and every record: inclusion proofs against the signed
    checkpoint, consistency proofs between every pair of sizes, the note's signature."""
    audit = rt.audit
    assert audit is not None
    key = load_or_create_signer(settings.audit_key_path).public_key
    leaves: list[bytes] = []
    roots: dict[int, bytes] = {}
    for size in range(1, 22):
        audit.commit(event(size))
        cp = audit.checkpoint()
        assert cp is not None and cp.tree_size == size
        note = note_text(cp)
        assert note is not None
        origin, n, root = read_note(note, key)
        assert (origin, n) == ("tapevault/audit", size)
        found = auditproofs.inclusion(rt.audit_store, size, "p1")
        assert found is not None
        leaves.append(found.leaf)
        assert root == mth(leaves)  # the definition, recomputed from the records' leaves
        roots[size] = root
        for seq in range(1, size + 1):
            proof = auditproofs.inclusion(rt.audit_store, seq, "p1")
            assert proof is not None and proof.checkpoint is not None
            assert verify_inclusion(seq - 1, size, proof.leaf, proof.hashes, root)
            assert not verify_inclusion(seq - 1, size, proof.leaf + b"x", proof.hashes, root)
    for old in range(1, 22):
        for new in range(old, 22):
            c = auditproofs.consistency(rt.audit_store, old, new)
            assert verify_consistency(old, new, c.hashes, roots[old], roots[new]), (old, new)
            if old < new:
                assert not verify_consistency(old, new, c.hashes, roots[old], roots[old])
    rt.close()
    code, out = audit_verify(settings, capsys)
    assert code == 0, out


async def test_proof_api_is_tenant_scoped_and_says_pending(rt: Runtime, clock: FixedClock) -> None:
    """GET /api/v1/audit/{seq}/proof: the caller's own record is proved (or pending before a
    checkpoint covers it); another tenant's is 404; bad input is 400."""
    audit = rt.audit
    assert audit is not None
    owner, other = customer(rt, clock), customer(rt, clock)
    key = load_or_create_signer(rt.settings.audit_key_path).public_key
    async with asgi_client(rt) as client:
        await client.get("/api/v1/audit", headers=owner.bearer)  # one record of its own
        page = (await client.get("/api/v1/audit", headers=owner.bearer)).json()
        seq = page["records"][0]["seq"]
        pending = (await client.get(f"/api/v1/audit/{seq}/proof", headers=owner.bearer)).json()
        assert pending["status"] == "pending" and pending["record"]["seq"] == seq
        audit.checkpoint()
        r = await client.get(f"/api/v1/audit/{seq}/proof", headers=owner.bearer)
        assert r.status_code == 200, r.text
        body = r.json()
        _, size, root = read_note(body["checkpoint"], key)
        assert body["tree_size"] == size and base64.b64decode(body["root_hash"]) == root
        proof = [base64.b64decode(p) for p in body["proof"]]
        leaf = base64.b64decode(body["leaf"])
        assert verify_inclusion(body["leaf_index"], size, leaf, proof, root)
        assert b'"seq":%d' % seq in leaf  # the leaf is the record the page showed
        assert (
            await client.get(f"/api/v1/audit/{seq}/proof", headers=other.bearer)
        ).status_code == 404
        for bad in ("0", "x", "9" * 30, "-1"):
            r = await client.get(f"/api/v1/audit/{bad}/proof", headers=owner.bearer)
            assert r.status_code in (400, 404), (bad, r.status_code)
        consistency = await client.get(
            "/api/v1/audit/consistency", params={"from": 1}, headers=owner.bearer
        )
        assert consistency.status_code == 200
        for params in ({}, {"from": 0}, {"from": 10**6}, {"from": 1, "to": 10**6}, {"x": 1}):
            r = await client.get("/api/v1/audit/consistency", params=params, headers=owner.bearer)
            assert r.status_code == 400, (params, r.text)


def test_an_integrator_dying_mid_batch_is_replaced_nothing_lost_or_doubled(
    settings: Settings, clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two processes' integrators on one database: the first dies in the middle of a batch
    (its transaction never commits); the second takes the role and integrates every record
    exactly once; the log verifies."""
    first = open_runtime(settings, clock=clock)
    assert first.audit is not None
    first.audit.integrator.interval = 3600
    for i in range(50):
        first.context.access_log.commit(event(i))
    store = first.audit_store

    class Killed(BaseException):
        pass

    real = store.integrate

    def dies(step: object) -> bool:
        with store.engine.begin() as conn:  # half a batch written, then the process is gone
            conn.exec_driver_sql(
                "DELETE FROM audit_incoming WHERE id IN (SELECT min(id) FROM audit_incoming)"
            )
            raise Killed

    store.integrate = dies  # type: ignore[method-assign]
    assert store.try_role()  # the first process is the integrator
    with pytest.raises(Killed):
        first.audit.integrator._integrate_all()  # as its thread would
    store.integrate = real  # type: ignore[method-assign]
    # The second process cannot take the role while the first holds it ...
    other = SqlAuditStore(make_engine(settings.database_url))
    second = Integrator(other, clock, load_or_create_signer(settings.audit_key_path))
    assert second.step() == 0 and other.waiting()[0] == 50
    store.release_role()  # ... the first dies: its lock goes with it
    assert second.step() == 50
    assert other.waiting()[0] == 0 and other.state().head_seq == 50
    keys = [r.entry.actor_id for r in other.records()]
    assert sorted(keys) == sorted(f"k{i}" for i in range(50))  # each once
    assert second.checkpoint() is not None
    other.release_role()
    first.audit.integrator.stop = lambda: None  # type: ignore[method-assign]
    first.close()
    code, out = audit_verify(settings, capsys)
    assert code == 0, out


def test_a_second_integrator_overtaken_changes_nothing(
    settings: Settings, clock: FixedClock
) -> None:
    """Were two integrators ever to run at once (the role lost and retaken), the one that was
    overtaken writes nothing: the head is compared and set, the waiting rows counted."""
    rt = open_runtime(settings, clock=clock)
    try:
        assert rt.audit is not None
        rt.audit.integrator.interval = 3600
        for i in range(5):
            rt.context.access_log.commit(event(i))
        store = rt.audit_store
        integ = rt.audit.integrator
        state = store.tree_state()
        step = integ._sequence(state, store.incoming(100))
        assert store.integrate(step)
        assert not store.integrate(step)  # the same step again: the head moved
        assert store.state().head_seq == 5 and store.waiting()[0] == 0
    finally:
        rt.close()


def test_audit_log_reads_own_writes_across_the_integration(rt: Runtime, clock: FixedClock) -> None:
    """An audit read right after requests sees them: the read waits (bounded) for the
    integrator."""
    assert rt.audit is not None
    who = customer(rt, clock)

    async def run() -> None:
        async with asgi_client(rt) as client:
            for _ in range(5):
                await client.get("/api/v1/audit", headers=who.bearer)
            page = (await client.get("/api/v1/audit", headers=who.bearer)).json()
            # The five reads before it (a read's own record is written as it answers).
            assert [r["action"] for r in page["records"]].count("audit.read") == 5

    asyncio.run(run())


def test_integration_happens_within_its_interval(rt: Runtime) -> None:
    """Without any reader or shutdown, a durable record is integrated within the interval (a
    generous bound here; BENCHMARKS.md measures the delay under load)."""
    assert rt.audit is not None
    rt.audit.commit(event(1))
    deadline = time.monotonic() + 5
    while rt.audit_store.state().head_seq < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_log_from_before_the_tree_gets_its_tree(
    settings: Settings, clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records integrated before migration 0021 (no tree): the integrator builds the tree over
    them, then signs notes whose root is the RFC 9162 root of all records."""
    rt = open_runtime(settings, clock=clock)
    assert rt.audit is not None
    for i in range(30):
        rt.context.access_log.commit(event(i))
    rt.audit.integrator.settle(5)
    with rt.engine.begin() as conn:  # as a log migrated from 0020 looks
        conn.exec_driver_sql("DELETE FROM audit_tree")
        conn.exec_driver_sql("UPDATE audit_state SET tree_size = 0")
    rt.context.access_log.commit(event(99))
    cp = rt.audit.checkpoint()
    assert cp is not None and cp.tree_size == 31
    leaves = []
    for seq in range(1, 32):
        found = auditproofs.inclusion(rt.audit_store, seq, "p1")
        assert found is not None
        leaves.append(found.leaf)
    assert bytes.fromhex(cp.root_hash or "") == mth(leaves)
    rt.close()
    code, out = audit_verify(settings, capsys)
    assert code == 0, out


async def test_the_store_failing_is_503_then_recovers(rt: Runtime, clock: FixedClock) -> None:
    """Appends failing: the audited request answers 503 and serves nothing; once the store
    works again it answers 200 by itself."""
    assert isinstance(rt.audit, AuditLog)
    who = customer(rt, clock)
    store = rt.audit_store
    real = store.write
    broken = True

    def write(*args: object, **kwargs: object) -> None:
        if broken:
            raise OSError("disk full")
        real(*args, **kwargs)  # type: ignore[arg-type]

    store.write = write  # type: ignore[method-assign]
    async with asgi_client(rt) as client:
        r = await client.get("/api/v1/audit", headers=who.bearer)
        assert r.status_code == 503 and "records" not in r.text
        broken = False
        deadline = time.monotonic() + 10
        while (r := await client.get("/api/v1/audit", headers=who.bearer)).status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)


def test_verify_checks_every_signed_root_and_reports_waiting_records(
    settings: Settings, clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """`audit verify` recomputes the tree's root over the records it streams and compares it
    with every signed note; a root altered in the database is named; records durable but not
    yet integrated are reported as such, not as missing."""
    rt = open_runtime(settings, clock=clock)
    assert rt.audit is not None
    for i in range(12):
        rt.context.access_log.commit(event(i))
        if i % 4 == 3:
            rt.audit.checkpoint()
    rt.audit.integrator.interval = 3600
    rt.audit.integrator.stop()
    rt.audit.commit(event(99))  # durable; its integrator is gone
    code, out = audit_verify(settings, capsys)
    assert code == 0, out
    assert "Merkle tree: 3 signed root(s) match" in out
    assert "1 record(s) are durable but not yet integrated" in out
    with rt.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE audit_checkpoints SET root_hash = '" + "ab" * 32 + "' WHERE size = 8"
        )
    code, out = audit_verify(settings, capsys)
    assert code == 1 and "checkpoint 8: its signed tree note does not verify" in out, out
    rt.audit.integrator.stop = lambda: None  # type: ignore[method-assign]
    rt.close()


def test_a_failing_integrator_keeps_records_says_so_and_recovers(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The integrator's store failing (a full disk): records stay durable and waiting, requests
    are still recorded, /healthz's problem names it after a while; then it integrates them."""
    audit = rt.audit
    assert audit is not None
    audit.integrator.interval = 3600
    audit.integrator.stop()
    real = rt.audit_store.integrate

    def full(step: object) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rt.audit_store, "integrate", full)
    monkeypatch.setattr(integrator_module, "FAILING_SECONDS", 0.0)
    audit.commit(event(1))
    assert audit.integrator.step() == 0
    problem = audit.checkpoint_problem
    assert problem is not None and "No space left" in problem
    assert rt.audit_store.waiting()[0] == 1
    monkeypatch.setattr(rt.audit_store, "integrate", real)
    assert audit.integrator.step() == 1
    assert audit.checkpoint_problem is None and rt.audit_store.state().head_seq == 1
