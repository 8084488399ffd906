"""Tamper-evident access log, part 5: the RFC 9162 Merkle tree over the integrated records.

The hash chain (``audit.py``) tells a verifier who reads the whole log that nothing changed; the
Merkle tree lets someone who holds one record, or two checkpoints, check it without reading the
log: an inclusion proof (RFC 9162 §2.1.3) shows a record is in the tree a checkpoint signed, a
consistency proof (§2.1.4) that a later checkpoint's tree only grew from an earlier one.

Leaf ``i`` is the record with ``seq = first + i``; its data is the record's canonical bytes (what
its chain hash covers), its hash ``SHA-256(0x00 || data)``, an interior node
``SHA-256(0x01 || left || right)`` (RFC 9162 §2.1.1). The store keeps the hash of every *perfect*
subtree, a node ``(level, index)`` covering leaves ``[index·2^level, (index+1)·2^level)``, written
once and never changed (about two 32-byte hashes a record). Any tree size's root and any proof is
then a handful of node reads: every range the RFC's recursions split off starts at a multiple of
its largest power of two, so it is a few perfect nodes folded from the right.

Pure functions: what to read (``*_nodes``) and how to combine what was read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

Node = tuple[int, int]  # (level, index)
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (``size`` > 1): RFC 9162's ``k``."""
    return 1 << ((size - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The perfect subtrees that make up ``MTH(D[start:end])``, left to right (``start`` must be
    a multiple of the largest power of two not above ``end - start``, as in every range the
    RFC's recursions produce)."""
    nodes: list[Node] = []
    while start < end:
        size = end - start
        width = size if size & (size - 1) == 0 else _split(size)
        level = width.bit_length() - 1
        if start % width:
            raise ValueError(f"range [{start}, {end}) is not aligned")
        nodes.append((level, start >> level))
        start += width
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """``MTH`` of a range from its perfect subtrees' hashes (``range_nodes`` order)."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def root_nodes(size: int) -> list[Node]:
    return range_nodes(0, size)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.3.1 ``PATH(m, D[n])`` as the leaf ranges whose ``MTH`` it lists,
    bottom-up (the order the proof is given in)."""
    if not 0 <= index < size:
        raise ValueError("leaf index outside the tree")
    out: list[tuple[int, int]] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m = start + k, m - k
    return out[::-1]


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.4.1 ``PROOF(m, D[n])`` as leaf ranges, in proof order."""
    if not 0 < old <= new:
        raise ValueError("a consistency proof needs 0 < old size <= new size")
    out: list[tuple[int, int]] = []
    start, end, m, whole = 0, new, old, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        out.append((start, end))
    return out[::-1]


def nodes_for(ranges: Iterable[tuple[int, int]]) -> set[Node]:
    return {node for start, end in ranges for node in range_nodes(start, end)}


def hashes_for(ranges: Iterable[tuple[int, int]], nodes: Mapping[Node, bytes]) -> list[bytes]:
    """Each range's ``MTH`` from the nodes read (``KeyError``: the store lacks one)."""
    return [fold([nodes[n] for n in range_nodes(start, end)]) for start, end in ranges]


class Appender:
    """Grows the tree by a batch of leaves: given the right edge of the tree so far (its
    ``root_nodes``), yields every perfect node the new leaves complete."""

    def __init__(self, size: int, edge: Mapping[Node, bytes], *, keep: bool = True) -> None:
        self.size = size
        self._edge = dict(edge)  # the nodes a new leaf may still need as a left sibling
        self.new: list[tuple[int, int, bytes]] = []  # (level, index, hash) to store
        self._keep = keep  # False: only the root is wanted (a verifier: memory O(log n))

    def append(self, leaf: bytes) -> None:
        level, index, h = 0, self.size, leaf
        if self._keep:
            self.new.append((0, index, h))
        self._edge[(0, index)] = h
        while index & 1:
            left = self._edge.pop((level, index - 1))
            self._edge.pop((level, index))
            h = node_hash(left, h)
            level, index = level + 1, index >> 1
            if self._keep:
                self.new.append((level, index, h))
            self._edge[(level, index)] = h
        self.size += 1

    def root(self) -> bytes:
        return fold([self._edge[n] for n in root_nodes(self.size)])


class Frontier:
    """The root of a growing tree, for a reader that only wants roots (a verifier streaming
    the whole log): the right edge as a stack of perfect subtrees, largest first (``root_nodes``
    order), so a leaf costs a list push and, on average, one ``node_hash``; ``Appender`` keeps
    a dict of nodes because the integrator stores them."""

    def __init__(self) -> None:
        self.size = 0
        self._edge: list[bytes] = []

    def append_data(self, data: bytes) -> None:
        """Add the leaf whose data is ``data`` (``leaf_hash`` and ``node_hash`` inlined: this
        runs once per record of the log)."""
        h = _sha256(b"\x00" + data).digest()
        edge = self._edge
        n = self.size
        while n & 1:
            h = _sha256(b"\x01" + edge.pop() + h).digest()
            n >>= 1
        edge.append(h)
        self.size += 1

    def root(self) -> bytes:
        return fold(self._edge)
