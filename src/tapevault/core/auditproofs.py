"""Proofs out of the access log's Merkle tree, for one tenant's records (RFC 9162 §2.1.3, §2.1.4).

An inclusion proof is against the newest checkpoint with a signed tree note: the caller gets the
record's leaf (its canonical bytes), the audit path and the note, and needs nothing of tapevault
to check them. A record integrated after that checkpoint is *pending* (proved within
``TAPEVAULT_AUDIT_CHECKPOINT_SECONDS``), never missing; one of another tenant is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tapevault.core import merkle
from tapevault.core.audit import AuditRecord, canonical_bytes
from tapevault.core.checkpoints import Checkpoint
from tapevault.core.integrator import TreeState


class ProofStore(Protocol):
    def record(self, seq: int) -> AuditRecord | None: ...

    def tree_state(self) -> TreeState: ...

    def last_tree_checkpoint(self) -> Checkpoint | None: ...

    def tree_nodes(self, nodes: set[merkle.Node]) -> dict[merkle.Node, bytes]: ...


@dataclass(frozen=True, slots=True)
class Inclusion:
    record: AuditRecord
    leaf_index: int | None  # None: not in the tree yet (pending)
    leaf: bytes
    hashes: list[bytes]
    checkpoint: Checkpoint | None  # None: no signed tree covers it yet (pending)


@dataclass(frozen=True, slots=True)
class Consistency:
    old: int
    new: int
    hashes: list[bytes]
    checkpoint: Checkpoint


def inclusion(store: ProofStore, seq: int, tenant_id: str) -> Inclusion | None:
    """The proof that record ``seq`` of ``tenant_id`` is in the log (None: no such record)."""
    record = store.record(seq)
    if record is None or record.entry.tenant_id != tenant_id:
        return None
    leaf = canonical_bytes(record.seq, record.entry, record.prev_hash)
    state = store.tree_state()
    cp = store.last_tree_checkpoint()
    index = seq - state.tree_first_seq
    if cp is None or cp.tree_size is None or not 0 <= index < cp.tree_size:
        return Inclusion(record, index if index >= 0 else None, leaf, [], None)
    ranges = merkle.inclusion_ranges(index, cp.tree_size)
    hashes = merkle.hashes_for(ranges, store.tree_nodes(merkle.nodes_for(ranges)))
    return Inclusion(record, index, leaf, hashes, cp)


def consistency(store: ProofStore, old: int, new: int | None) -> Consistency:
    """The proof that the tree of ``new`` leaves (default: the newest signed one) extends the
    tree of ``old``; ``ValueError`` with the reason when the sizes cannot be proved."""
    cp = store.last_tree_checkpoint()
    if cp is None or cp.tree_size is None:
        raise ValueError("no signed tree checkpoint yet")
    size = cp.tree_size if new is None else new
    if size > cp.tree_size:
        raise ValueError(f"to is beyond the newest signed tree ({cp.tree_size} leaves)")
    if not 0 < old <= size:
        raise ValueError("from must be at least 1 and at most to")
    if size == old:
        return Consistency(old, size, [], cp)
    ranges = merkle.consistency_ranges(old, size)
    hashes = merkle.hashes_for(ranges, store.tree_nodes(merkle.nodes_for(ranges)))
    return Consistency(old, size, hashes, cp)
