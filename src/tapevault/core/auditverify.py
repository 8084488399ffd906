"""Tamper-evident access log, part 3: one pass over the records that names the first bad one.

See ``verify``. Records arrive in stored ``seq`` order from the database, possibly tampered with
(edited, deleted, inserted, renumbered rows); the verifier keeps a window of ``WINDOW`` records on
either side to tell a reorder from a removal or an insertion, re-synchronises after each finding
so one tampering is one finding, and checks every signed checkpoint against the chain.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tapevault.core.audit import (
    GENESIS_HASH,
    HASH_PATTERN,
    AuditEntry,
    AuditRecord,
    Encoded,
    canonical_bytes,
    record_hash,
)
from tapevault.core.checkpoints import Checkpoint, verify_checkpoint_signature

_END = object()  # ``_Verifier._lane_run``: the records ran out
_FULL = object()  # ``_Verifier._lane_run``: enough findings, stop
# How far the verifier looks ahead (and remembers behind) to tell a reorder from a removal or an
# insertion. Tampering that moves a record further than this is still reported, as two findings.
WINDOW = 64


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem, reported at the first record it involves."""

    seq: int
    kind: str  # "modified" | "removed" | "inserted" | "reordered" | "checkpoint"
    message: str


@dataclass
class VerifyReport:
    """What ``verify`` saw; ``findings`` are in seq order, the first is the first bad record."""

    records: int
    checkpoints: int
    head_seq: int | None
    head_hash: str | None
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not self.findings


def _span(first: int, count: int) -> str:
    return f"record {first}" if count == 1 else f"records {first} to {first + count - 1}"


class _Node:
    """A record inside the verifier's window, with the seq it really hashes under (``t``)."""

    __slots__ = ("drop", "fill", "index", "rec", "t")

    def __init__(self, rec: AuditRecord, index: int) -> None:
        self.rec = rec
        self.index = index
        self.t: int | None = None  # the seq the record hashes under; None: under none nearby
        self.drop = False  # already reported as inserted: discard silently
        self.fill = False  # already reported as swapped: take its slot silently


def _hashes_under(rec: AuditRecord, seq: int) -> bool:
    try:
        return record_hash(seq, rec.entry, rec.prev_hash) == rec.hash
    except (ValueError, TypeError, AttributeError):  # tampered rows may hold anything
        return False


def _own_bytes(rec: AuditRecord) -> bytes | None:
    """The canonical bytes of ``rec`` under its stored seq (None: it cannot be encoded)."""
    try:
        return canonical_bytes(rec.seq, rec.entry, rec.prev_hash)
    except (ValueError, TypeError, AttributeError):  # tampered rows may hold anything
        return None


# Told each record's stored seq, in stored order, with its canonical bytes under that seq (None
# when it cannot be encoded): what a Merkle tree check needs, without encoding every record twice.
OnRecord = Callable[[int, bytes | None], None]


def _entry_fits(entry: AuditEntry, rec: AuditRecord) -> bool:
    """Whether ``entry`` is the content ``rec``'s seq and hashes were computed for."""
    try:
        return record_hash(rec.seq, entry, rec.prev_hash) == rec.hash
    except (ValueError, TypeError, AttributeError):
        return False


class _Verifier:
    """One pass over the records in stored order, with a window of WINDOW records either side.

    The state is "the slot expected next" (``exp_seq``, the seq the next genuine record hashes
    under) and "the hash it must link to" (``exp_prev``). Each record is compared with that; on a
    mismatch the window tells which tampering explains it, one finding is emitted, and the state is
    resynchronised from the stored hashes so that one tampering gives one finding.
    """

    def __init__(
        self,
        checkpoints: Iterable[Checkpoint],
        public_keys: Mapping[str, Ed25519PublicKey],
        first_prev_hash: str,
        first_seq: int,
        max_findings: int,
        untrusted: Mapping[str, str],
        on_record: OnRecord | None = None,
        fast_lane: bool = True,
    ) -> None:
        self.fast_lane = fast_lane
        self.untrusted = untrusted
        self.on_record = on_record
        self.first_seq = first_seq
        self.first_prev_hash = first_prev_hash
        self.max_findings = max_findings
        self.exp_seq = first_seq
        self.exp_prev = first_prev_hash
        self.offset: int | None = 0  # stored seq minus hashed seq, as currently established
        self.pred: _Node | None = None  # the record accepted into the previous slot
        self.pred_flagged = False  # the previous slot already has a finding
        self.ahead: deque[_Node] = deque()
        self.behind: deque[_Node] = deque()
        self.by_hash: dict[str, _Node] = {}
        self.ahead_by_prev: dict[str, list[_Node]] = {}
        self.skipped: dict[int, int] = {}  # slots passed by a reorder -> stream index
        self.findings: list[Finding] = []
        self.covered: list[int] = []  # seqs of findings that explain damaged records
        self.rows = 0
        self.head: AuditRecord | Encoded | None = None
        # The fast lane (see ``_lane_run``): while every record in the window is exactly the
        # expected next one, the window is ``lane`` (plain records, no ``_Node``, no indexes)
        # and ``ahead`` is empty; records that left it go to ``passed`` (the newest WINDOW).
        self.in_lane = fast_lane
        self.lane: deque[AuditRecord | Encoded] = deque()
        self.passed: deque[AuditRecord | Encoded] = deque(maxlen=WINDOW)
        # checkpoints: merged by size as slots settle (one slot late, see _settle)
        self.public_keys = public_keys
        self.cps: Iterator[Checkpoint] = iter(checkpoints)
        self.cp_next: Checkpoint | None = None
        self.cps_open = True  # the checkpoint iterator may have more
        self.cp_last_size: int | None = None
        self.cp_count = 0
        self.good_size = first_seq - 1
        # The good checkpoint before the one at ``good_size``, and the key that signed that one:
        # two valid signatures over different heads of one size name both keys.
        self.good_before = first_seq - 1
        self.good_key = ""
        # Pruning cuts at a checkpoint and keeps it: a retained log starting anywhere else was
        # cut by someone else.
        self.start_vouched = first_seq == 1
        self.pending_slot: int | None = None  # the last settled slot, checked one step late
        self.pending_hash = ""
        self.held: deque[tuple[int, str]] = deque()  # settled slots held back during a reorder

    # - driving

    def run(self, records: Iterable[AuditRecord | Encoded]) -> VerifyReport:
        items = iter(records)
        while True:
            if self.in_lane:
                item = self._lane_run(items)
                if item is _FULL:
                    return self._report()
                if item is _END:
                    break
            else:
                item = next(items, _END)
                if item is _END:
                    break
                self.rows += 1
            assert isinstance(item, AuditRecord | Encoded)  # not a sentinel
            self.head = item
            rec = item.record() if isinstance(item, Encoded) else item
            self._admit(_Node(rec, self.rows))
            if len(self.ahead) > WINDOW:
                self._step()
                if self._full():
                    return self._report()
            if self.rows % 16 == 0:
                self._enter_lane()
        if self.in_lane:
            # No more records: the rest of the window is stepped by the general machinery
            # (what the lane would do with it, and at most WINDOW records).
            self._leave_lane(self.rows)
        while self.ahead:
            self._step()
            if self._full():
                return self._report()
        self._finish()
        return self._report()

    # - the fast lane
    #
    # Nearly every record is exactly the expected next one: it hashes under its stored seq, its
    # seq follows the previous record's and its prev_hash is that record's hash. While the whole
    # window is such a run, the general machinery below would accept each record as it leaves
    # the window (``_classify`` -> ``_linked``: right slot, right link, no rival for the slot,
    # since every record in a linked run hashes under a different seq), so the lane does just
    # that, without building nodes and indexes. The first record that does not fit turns the
    # lane back into the general window (``_leave_lane``) before it is admitted, so the general
    # machinery sees exactly the window it would have seen, and decides as it always did.

    def _lane_run(self, items: Iterator[AuditRecord | Encoded]) -> object:
        """Take records into the lane while they extend the clean run, accepting the oldest
        once the lane is longer than WINDOW, as ``_step`` would. Returns the first record that
        does not fit (the lane then left: the general machinery admits it), ``_END`` when the
        records ran out, ``_FULL`` when a checkpoint finding made enough findings.

        One loop with the state in locals: this runs for nearly every record of the log."""
        lane, passed, on_record = self.lane, self.passed, self.on_record
        sha256 = hashlib.sha256
        rows = self.rows
        if lane:
            tail_seq, tail_hash = lane[-1].seq, lane[-1].hash
        else:
            tail_seq, tail_hash = self.exp_seq - 1, self.exp_prev
        pending, pending_hash = self.pending_slot, self.pending_hash
        stepped = False
        item: AuditRecord | Encoded | None = None
        outcome: object = _END
        for item in items:
            rows += 1
            data = item.data if isinstance(item, Encoded) else _own_bytes(item)
            if (
                data is None
                or item.seq != tail_seq + 1
                or item.prev_hash != tail_hash
                or sha256(data).hexdigest() != item.hash
            ):
                outcome = item
                break
            if on_record is not None:
                on_record(item.seq, data)
            lane.append(item)
            tail_seq, tail_hash = item.seq, item.hash
            if len(lane) > WINDOW:
                rec = lane.popleft()
                passed.append(rec)
                seq, digest = rec.seq, rec.hash
                stepped = True
                cp = self.cp_next
                if (
                    pending is not None
                    and seq > pending
                    and not self.held
                    and (cp.size > pending if cp is not None else not self.cps_open)
                ):
                    # ``_settle`` with no checkpoint due: only the pending slot moves.
                    pending, pending_hash = seq, digest
                else:
                    self.pending_slot, self.pending_hash = pending, pending_hash
                    self._settle(seq, digest)
                    pending, pending_hash = self.pending_slot, self.pending_hash
                    if len(self.findings) >= self.max_findings:
                        outcome = _FULL
                        break
        self.rows = rows
        if item is not None:
            self.head = item
        self.pending_slot, self.pending_hash = pending, pending_hash
        if stepped:
            # What ``_accept`` and ``_linked`` leave after the last record the lane accepted.
            last = passed[-1]
            self.exp_seq, self.exp_prev = last.seq + 1, last.hash
            self.offset = 0
            self.pred_flagged = False
        if outcome is not _END and outcome is not _FULL:
            self._leave_lane(rows - 1)  # ``outcome``, the newest record, is not in the lane
        return outcome

    def _leave_lane(self, last_index: int) -> None:
        """Turn the lane back into the general window; ``last_index``: the stream index of the
        lane's newest record."""
        self.in_lane = False
        lane, passed = self.lane, self.passed
        index = last_index - len(lane) - len(passed)
        for item in passed:
            index += 1
            node = _Node(item.record() if isinstance(item, Encoded) else item, index)
            node.t = node.rec.seq
            self.behind.append(node)
            if len(self.behind) > WINDOW:
                self.behind.popleft()
            self.pred = node
        passed.clear()
        for item in lane:
            index += 1
            node = _Node(item.record() if isinstance(item, Encoded) else item, index)
            node.t = node.rec.seq
            self.ahead.append(node)
            self.ahead_by_prev.setdefault(node.rec.prev_hash, []).append(node)
        lane.clear()
        # ``by_hash`` maps a hash to the newest record in the window that has it (an older one
        # with the same hash is out of it, or shadowed): rebuilt in stream order, it is what the
        # general machinery would have kept.
        self.by_hash = {}
        for node in self.behind:
            self.by_hash[node.rec.hash] = node
        for node in self.ahead:
            self.by_hash[node.rec.hash] = node

    def _enter_lane(self) -> None:
        """Back to the lane once the general window holds nothing but the expected run."""
        if not self.fast_lane or self.skipped or self.held or self.offset not in (0, None):
            return
        seq, prev = self.exp_seq, self.exp_prev
        for node in self.ahead:
            rec = node.rec
            if node.drop or node.fill or node.t != seq or rec.seq != seq or rec.prev_hash != prev:
                return
            seq, prev = seq + 1, rec.hash
        self.in_lane = True
        self.lane.extend(node.rec for node in self.ahead)
        self.ahead.clear()
        self.ahead_by_prev.clear()

    def _full(self) -> bool:
        return len(self.findings) >= self.max_findings

    def _report(self) -> VerifyReport:
        findings = sorted(self.findings, key=lambda f: f.seq)[: self.max_findings]
        head = self.head
        return VerifyReport(
            records=self.rows,
            checkpoints=self.cp_count,
            head_seq=None if head is None else head.seq,
            head_hash=None if head is None else head.hash,
            findings=findings,
        )

    def _emit(self, seq: int, kind: str, message: str, *, covers: bool = True) -> None:
        self.findings.append(Finding(seq, kind, message))
        if covers:
            self.covered.append(seq)

    # - the window

    def _admit(self, node: _Node) -> None:
        rec = node.rec
        data = _own_bytes(rec)
        if data is not None and hashlib.sha256(data).hexdigest() == rec.hash:
            node.t = rec.seq  # the common case: one hash, nothing else to try
        else:
            self._resolve(node, self._candidates(rec))
        if self.on_record is not None:
            self.on_record(rec.seq, data)
        self.ahead.append(node)
        siblings = self.ahead_by_prev.get(rec.prev_hash)
        if siblings is None:
            self.ahead_by_prev[rec.prev_hash] = [node]
        else:
            siblings.append(node)
        self.by_hash[rec.hash] = node
        if node.t is not None and rec.hash in self.ahead_by_prev:
            self._wake(node)

    def _candidates(self, rec: AuditRecord) -> list[int]:
        """Seqs worth trying for a record that does not hash under its stored seq."""
        candidates = []
        if self.offset:
            candidates.append(rec.seq - self.offset)
        pred = self.by_hash.get(rec.prev_hash)
        if pred is not None and pred.t is not None:
            candidates.append(pred.t + 1)
        elif rec.prev_hash == self.first_prev_hash:
            candidates.append(self.first_seq)
        candidates += (rec.seq - 1, rec.seq + 1, rec.seq - 2, rec.seq + 2)
        return candidates

    def _resolve(self, node: _Node, candidates: Iterable[int]) -> None:
        seen: set[int] = set()
        for seq in candidates:
            if seq not in seen:
                seen.add(seq)
                if _hashes_under(node.rec, seq):
                    node.t = seq
                    return

    def _wake(self, node: _Node) -> None:
        """Now that ``node``'s seq is known, its unresolved successors can try the next one."""
        stack = [node]
        while stack:
            done = stack.pop()
            if done.t is None:
                continue
            for succ in self.ahead_by_prev.get(done.rec.hash, ()):
                if succ.t is None:
                    self._resolve(succ, (done.t + 1,))
                    stack.append(succ)

    def _step(self) -> None:
        node = self.ahead.popleft()
        siblings = self.ahead_by_prev[node.rec.prev_hash]
        siblings.remove(node)
        if not siblings:
            del self.ahead_by_prev[node.rec.prev_hash]
        if node.fill:
            self._accept(node, self.exp_seq, flagged=True)
        elif not node.drop:
            if node.t is None:
                rec = node.rec
                near = [self.exp_seq, self.exp_seq - 1, self.exp_seq + 1]
                for distance in range(1, WINDOW + 1):
                    near += (rec.seq - distance, rec.seq + distance)
                self._resolve(node, near)
                self._wake(node)
            self._classify(node)
        self.behind.append(node)
        if len(self.behind) > WINDOW:
            old = self.behind.popleft()
            if self.by_hash.get(old.rec.hash) is old:
                del self.by_hash[old.rec.hash]
        if self.skipped:
            for slot, index in list(self.skipped.items()):
                if node.index - index > 2 * WINDOW:
                    del self.skipped[slot]

    def _accept(self, node: _Node, slot: int, *, flagged: bool) -> None:
        self._settle(slot, node.rec.hash)
        self.exp_seq = slot + 1
        self.exp_prev = node.rec.hash
        self.pred = node
        self.pred_flagged = flagged

    def _live(self, nodes: Iterable[_Node]) -> list[_Node]:
        return [n for n in nodes if not n.drop]

    def _expected_ahead(self) -> _Node | None:
        """The record that belongs in the current slot, if it is waiting further on."""
        for node in self.ahead_by_prev.get(self.exp_prev, ()):
            if node.t == self.exp_seq and not node.drop:
                return node
        return None

    def _branch(self, node: _Node) -> tuple[int, bool]:
        """How far ``node``'s chain continues ahead, and whether it runs on to the newest record.

        A forged branch dead-ends: something after it in the stream does not link to it.
        """
        reach = 0
        while reach <= WINDOW:
            here = node.index
            nodes = self.ahead_by_prev.get(node.rec.hash, ())
            successors = [n for n in nodes if n.index > here and not n.drop]
            if not successors:
                break
            node = successors[0]
            reach += 1
        return reach, bool(self.ahead) and node is self.ahead[-1]

    def _rival_wins(self, node: _Node, rival: _Node) -> bool:
        """Two records hash as the same slot: is ``rival`` (later in the stream) the genuine one?

        The genuine record is the one the rest of the chain continues from. When both branches
        dead-end equally far, nothing tells them apart; the earlier one is then reported, with a
        message naming both.
        """
        if rival.rec.hash == node.rec.hash:
            return False  # a byte-identical copy: the later one is the extra row
        (node_reach, node_open), (rival_reach, rival_open) = self._branch(node), self._branch(rival)
        if node_open != rival_open:
            return rival_open
        return rival_reach >= node_reach

    def _inserted_run(self, node: _Node, genuine: _Node) -> None:
        """``node`` and everything between it and ``genuine`` were inserted: drop them."""
        count = 1
        for other in self.ahead:
            if other is genuine:
                break
            other.drop = True
            count += 1
        first = node.rec.seq
        rows = _span(first, count)
        verb = "was" if count == 1 else "were"
        after = f"record {self.pred.rec.seq}" if self.pred is not None else "the log start"
        if node.t == genuine.t and self._branch(genuine) == self._branch(node):
            message = (
                f"records {first} and {genuine.rec.seq} both hash as record {genuine.t} after "
                f"{after}: one of them was inserted"
            )
        else:
            message = (
                f"{rows} {verb} inserted: record {genuine.rec.seq} (originally {genuine.t}) "
                f"links past it to {after}"
            )
        self._emit(first, "inserted", message)
        self.offset = None

    # - classification

    def _classify(self, node: _Node) -> None:
        t = node.t
        if t is None:
            self._unhashed(node)
        elif t < self.exp_seq and t in self.skipped:
            del self.skipped[t]  # a record a reported reorder moved later: already explained
            self._check_late_link(node, t)
        elif t == self.exp_seq:
            if node.rec.prev_hash == self.exp_prev:
                self._linked(node, t)
            else:
                self._broken_link(node, t)
        elif t > self.exp_seq:
            self._beyond_slot(node, t)
        else:
            self._before_slot(node, t)

    def _linked(self, node: _Node, t: int) -> None:
        """Right slot, right link. Still: is another record claiming this slot, or was it moved?"""
        rec = node.rec
        others = self.ahead_by_prev.get(rec.prev_hash)
        if others:
            rivals = [n for n in others if n.t == t and not n.drop]
            if rivals and self._rival_wins(node, rivals[0]):
                self._inserted_run(node, rivals[0])  # a forged copy with a valid hash went first
                return
        offset = rec.seq - t
        if self.skipped:
            self.offset = None  # inside a reordered stretch the stored seqs shift about
        else:
            if self.offset is not None and offset != self.offset:
                self._emit(
                    t + self.offset,
                    "modified",
                    f"record {t + self.offset} was renumbered to {rec.seq}: "
                    f"it only hashes under seq {t}",
                )
            self.offset = offset
        self._accept(node, t, flagged=False)

    def _broken_link(self, node: _Node, t: int) -> None:
        """Right slot, but its prev_hash is not the hash of the record before it."""
        rec = node.rec
        pred = self.pred
        genuine = self._expected_ahead()
        if genuine is not None:
            self._inserted_run(node, genuine)
            return
        if self.pred_flagged:
            pass  # the previous record's finding explains this link
        elif pred is not None and rec.prev_hash == pred.rec.prev_hash:
            self._emit(
                rec.seq,
                "inserted",
                f"record {rec.seq} was inserted: it claims to follow record {pred.rec.seq} "
                f"but links to the record before that",
            )
        else:
            self._blame_rehash(rec)
        self._accept(node, t, flagged=False)

    def _beyond_slot(self, node: _Node, t: int) -> None:
        """The record hashes under a later seq than expected: removed, reordered or forged."""
        rec = node.rec
        at = self.pred.rec.seq + 1 if self.pred is not None else self.first_seq
        if rec.prev_hash == self.exp_prev:
            self._emit(
                rec.seq,
                "modified",
                f"record {rec.seq} was modified: it follows record {at - 1} but its hash was "
                f"recomputed under seq {t}",
            )
            self.offset = rec.seq - t
            self._accept(node, t, flagged=False)
            return
        if t - self.exp_seq <= WINDOW:
            for other in self.ahead:  # a moved record whose neighbours are not in the window
                if other.t is None and not (other.drop or other.fill):
                    self._resolve(other, range(self.exp_seq, t))
                    self._wake(other)
        missing = [n for n in self.ahead if n.t is not None and self.exp_seq <= n.t < t]
        missing = self._live(missing)
        if missing:
            rivals = self._live(n for n in self.ahead if n.t == t)
            genuine = self._expected_ahead()
            far = t - self.exp_seq > len(self.ahead) + 1
            if genuine is not None and (far or (rivals and self._rival_wins(node, rivals[0]))):
                self._inserted_run(node, genuine)
                return
            for other in missing:
                assert other.t is not None
                self.skipped[other.t] = node.index
            moved = min(missing, key=lambda n: (n.t, n.index))
            if moved.t == rec.seq and moved.rec.seq == t:
                message = f"records {rec.seq} and {t} were swapped"
            else:
                message = (
                    f"records were reordered: record {rec.seq} holds record {t}, and record "
                    f"{moved.rec.seq} holds record {moved.t}, which belongs before it"
                )
            self._emit(rec.seq, "reordered", message)
            self.offset = None
            self._accept(node, t, flagged=False)
            return
        count = t - self.exp_seq
        rows = _span(at, count)
        self._emit(at, "removed", f"{rows} {'is' if count == 1 else 'are'} missing")
        self.offset = rec.seq - t
        self._accept(node, t, flagged=False)

    def _before_slot(self, node: _Node, t: int) -> None:
        """The record hashes under a seq whose slot has already been filled."""
        rec = node.rec
        if rec.prev_hash == self.exp_prev and rec.seq == t and self.covered:
            # What an honest append produces after rows were renumbered (already reported):
            # it hashes under its stored seq and links to the head. Continue from it.
            self.offset = 0
            self.exp_seq, self.exp_prev = t + 1, rec.hash
            self.pred, self.pred_flagged = node, False
            return
        self._emit(
            rec.seq,
            "inserted",
            f"record {rec.seq} was inserted: it hashes as record {t}, whose place is already taken",
        )
        self.offset = None  # later rows were probably renumbered to make room

    def _unhashed(self, node: _Node) -> None:
        """The record hashes under no nearby seq: swapped content, an inserted fake, or an edit."""
        rec = node.rec
        for other in self.ahead:
            if (
                other.t is None
                and not (other.drop or other.fill)
                and (_entry_fits(other.rec.entry, rec) or _entry_fits(rec.entry, other.rec))
            ):
                other.fill = True
                self._emit(
                    rec.seq,
                    "reordered",
                    f"records {rec.seq} and {other.rec.seq} were swapped: "
                    f"each holds the other's content",
                )
                self._accept(node, self.exp_seq, flagged=True)
                return
        genuine = self._expected_ahead()
        if genuine is not None:
            self._inserted_run(node, genuine)
            return
        slot = self.exp_seq
        message = f"record {rec.seq} was modified: its content no longer matches its hash"
        # Its own hash is unusable, but a successor that links to it tells its slot.
        after = [n.t for n in self.ahead_by_prev.get(rec.hash, ()) if n.t is not None]
        if after and after[0] - 1 > slot:
            count = after[0] - 1 - slot
            at = self.pred.rec.seq + 1 if self.pred is not None else self.first_seq
            self._emit(at, "removed", f"{_span(at, count)} {'is' if count == 1 else 'are'} missing")
            slot += count
        elif rec.prev_hash != self.exp_prev and not self.pred_flagged:
            if self._fits_link(rec, slot):
                message = (
                    f"record {rec.seq} was modified: its prev_hash was altered and no longer "
                    f"links to the record before it"
                )
            else:
                self._blame_rehash(rec)
        self._emit(rec.seq, "modified", message)
        self._accept(node, slot, flagged=True)

    def _check_late_link(self, node: _Node, t: int) -> None:
        """A record arriving late after a reorder still witnesses its predecessor's hash."""
        rec = node.rec
        if rec.prev_hash in self.by_hash or not HASH_PATTERN.fullmatch(rec.prev_hash):
            return
        for other in self.behind:
            if other.t == t - 1 and not other.drop and other.rec.seq not in self.covered:
                self._emit(
                    other.rec.seq,
                    "modified",
                    f"record {other.rec.seq} was modified and its hash recomputed: record "
                    f"{t}'s prev_hash (now at {rec.seq}) no longer matches it",
                )
                return

    def _fits_link(self, rec: AuditRecord, slot: int) -> bool:
        """Whether ``rec`` verifies once its prev_hash is put back to the expected one."""
        try:
            return record_hash(slot, rec.entry, self.exp_prev) == rec.hash
        except (ValueError, TypeError, AttributeError):
            return False

    def _blame_rehash(self, rec: AuditRecord) -> None:
        """``rec`` links to a hash nobody nearby has: the previous record was probably re-hashed."""
        pred = self.pred
        if pred is None:
            self._emit(
                rec.seq,
                "modified",
                f"record {rec.seq} was modified: its prev_hash does not link to the start of "
                f"the retained log ({self.first_prev_hash[:16]}…)",
            )
        elif (
            rec.prev_hash in self.by_hash
            or rec.prev_hash == GENESIS_HASH
            or not HASH_PATTERN.fullmatch(rec.prev_hash)
        ):
            self._emit(
                rec.seq,
                "modified",
                f"record {rec.seq} was modified: its prev_hash does not link to record "
                f"{pred.rec.seq}",
            )
        else:
            # Nothing nearby has that hash: the previous record's content changed and its hash
            # was recomputed (or, indistinguishably, this prev_hash was replaced and re-hashed).
            self._emit(
                pred.rec.seq,
                "modified",
                f"record {pred.rec.seq} was modified and its hash recomputed: record {rec.seq}'s "
                f"prev_hash no longer matches it",
            )

    # - checkpoints

    def _settle(self, slot: int, head_hash: str) -> None:
        """Check checkpoints one slot late: a re-hashed record is only found by its successor."""
        pending = self.pending_slot
        if pending is not None:
            if slot <= pending:
                return
            if self.skipped:
                # A record moved later may still show that one of these was re-hashed.
                self.held.append((pending, self.pending_hash))
            else:
                while self.held:
                    self._checkpoints_through(*self.held.popleft())
                if self.cp_next is not None or self.cps_open:
                    self._checkpoints_through(pending, self.pending_hash)
        self.pending_slot = slot
        self.pending_hash = head_hash

    def _peek_checkpoint(self) -> Checkpoint | None:
        if self.cp_next is None and self.cps_open:
            cp = next(self.cps, None)
            self.cps_open = cp is not None
            if cp is not None:
                if self.cp_last_size is not None and cp.size < self.cp_last_size:
                    raise ValueError("checkpoints must be given in ascending size order")
                self.cp_last_size = cp.size
                self.cp_count += 1
            self.cp_next = cp
        return self.cp_next

    def _checkpoints_through(self, slot: int, head_hash: str) -> None:
        while (cp := self._peek_checkpoint()) is not None and cp.size <= slot:
            self.cp_next = None
            if not self._signature_ok(cp) or cp.size < self.first_seq - 1:
                continue
            if cp.size == self.first_seq - 1:
                self.start_vouched = True
            if cp.size == self.first_seq - 1:
                actual: str | None = self.first_prev_hash
            else:
                actual = head_hash if cp.size == slot else None
            if actual == cp.head_hash:
                if cp.size > self.good_size:
                    self.good_before, self.good_size = self.good_size, cp.size
                self.good_key = cp.key_id
                continue
            if cp.size == self.good_size and self.good_key:
                # Another validly signed checkpoint of this size matched the records: two
                # signers vouch for two different logs, and one of them is a forgery.
                first = max(self.good_before + 1, self.first_seq)
                self._emit(
                    first,
                    "checkpoint",
                    f"records {first} up to {cp.size} were rewritten, or a checkpoint forged: "
                    f"checkpoint {cp.size} is signed twice over different heads (key "
                    f"{self.good_key} over the records as they are, key {cp.key_id} over "
                    f"others)",
                )
                continue
            if cp.size == self.first_seq - 1:
                if self.first_seq not in self.covered:
                    self._emit(
                        self.first_seq,
                        "checkpoint",
                        f"the retained log does not start where checkpoint {cp.size} says: "
                        f"its starting hash differs from the one signed for record {cp.size}",
                    )
                continue
            if any(self.good_size < seq <= cp.size for seq in self.covered):
                continue  # an earlier finding in this stretch already explains the mismatch
            first = self.good_size + 1
            since = (
                f"after checkpoint {self.good_size}"
                if self.good_size >= self.first_seq
                else f"from {self.first_seq}"
            )
            self._emit(
                first,
                "checkpoint",
                f"records {since} up to {cp.size} were rewritten: checkpoint {cp.size} was "
                f"signed over a different head hash",
            )

    def _signature_ok(self, cp: Checkpoint) -> bool:
        if cp.key_id not in self.public_keys:
            why = self.untrusted.get(cp.key_id)
            self._emit(
                cp.size,
                "checkpoint",
                f"checkpoint {cp.size} is signed by unknown key {cp.key_id!r}"
                if why is None
                else f"checkpoint {cp.size} is signed by key {cp.key_id!r}, which is not "
                f"trusted: {why}",
                covers=False,
            )
            return False
        if not verify_checkpoint_signature(cp, self.public_keys):
            self._emit(
                cp.size,
                "checkpoint",
                f"checkpoint {cp.size} has an invalid signature (key {cp.key_id})",
                covers=False,
            )
            return False
        return True

    def _finish(self) -> None:
        """After the last record: settle it, then checkpoints beyond it mean a truncated log."""
        last_slot = self.first_seq - 1
        while self.held:
            self._checkpoints_through(*self.held.popleft())
        if self.pending_slot is not None:
            self._checkpoints_through(self.pending_slot, self.pending_hash)
            last_slot = self.pending_slot
        beyond = 0
        while (cp := self._peek_checkpoint()) is not None:
            self.cp_next = None
            if not self._signature_ok(cp):
                continue
            if cp.size > last_slot:
                beyond = max(beyond, cp.size)
            elif cp.size == self.first_seq - 1:
                self.start_vouched = self.start_vouched or cp.head_hash == self.first_prev_hash
        if not self.start_vouched:
            cut = self.first_seq - 1
            self._emit(
                cut,
                "removed",
                f"records up to {cut} were removed: the log says it was pruned after record "
                f"{cut}, but no signed checkpoint {cut} vouches for that (pruning cuts only at "
                f"a checkpoint, and keeps it)",
            )
        if beyond:
            at = self.pred.rec.seq + 1 if self.pred is not None else self.first_seq
            count = beyond - last_slot
            self._emit(
                at,
                "removed",
                f"{_span(at, count)} {'is' if count == 1 else 'are'} missing: checkpoint "
                f"{beyond} covers them but the log ends at {at - 1}",
            )


def verify(
    records: Iterable[AuditRecord | Encoded],
    checkpoints: Iterable[Checkpoint],
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    first_prev_hash: str = GENESIS_HASH,
    first_seq: int = 1,
    max_findings: int = 20,
    untrusted: Mapping[str, str] | None = None,
    on_record: OnRecord | None = None,
    fast_lane: bool = True,
) -> VerifyReport:
    """Check the chain and the checkpoints in one pass; findings name the first bad record.

    ``records`` must come in ascending stored-seq order and ``checkpoints`` in ascending size
    order (both as the database returns them with ORDER BY); memory stays bounded by a window of
    ``WINDOW`` records either side. ``first_seq``/``first_prev_hash`` say where the retained log
    starts after pruning. Scanning stops once ``max_findings`` findings were made.
    ``untrusted`` says, by key id, why a key known but not among ``public_keys`` is not trusted
    (a checkpoint it signed is a finding that says so).
    ``on_record`` is told every record's seq as it is read, with its canonical bytes.
    A record may come as ``Encoded`` (its bytes computed by the reader, see ``audit.encoded``):
    it is checked exactly as the ``AuditRecord`` it stands for.
    ``fast_lane=False`` runs every record through the general machinery: the same verdicts,
    slower (tests compare the two).
    """
    if max_findings < 1:
        raise ValueError("max_findings must be at least 1")
    verifier = _Verifier(
        checkpoints,
        public_keys,
        first_prev_hash,
        first_seq,
        max_findings,
        untrusted or {},
        on_record,
        fast_lane,
    )
    return verifier.run(records)
