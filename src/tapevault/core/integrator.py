"""The access log's integrator: one per deployment, off every request's path.

Requests wait only for their record to be durable (``auditlog.py`` appends it, unsequenced, with
whatever else queued). A moment later the integrator, the one process that holds the role (a
PostgreSQL advisory lock, a file lock beside a SQLite database), takes the waiting records in
order, gives each its ``seq``, chains it (``audit.py``), adds it as a leaf of the RFC 9162 tree
(``merkle.py``) and moves the head, in one transaction that also deletes what it integrated; and
every ``checkpoint_seconds`` it signs the head: the chain's head hash and the tree's root as a
C2SP signed note, kept in the database, the checkpoint journal and the process log.

This is Trillian/Tessera's split between *sequencing durably* and *integrating*: the write a
request waits for is a cheap batched append any process may make; the hashing, the single head
and the signature belong to one integrator, so no two writers ever wait for each other's hash.

Every serving process runs one (``start``); all but the role holder only try to take the role
each ``interval`` seconds, so when the holder dies (its lock goes with it) another takes over
within one interval and integrates what was left, from the database: nothing integrated lives
only in memory. A step that another integrator overtook changes nothing (the store compares and
sets the head), so even two integrators at once would neither lose nor double a record.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tapevault.core import merkle
from tapevault.core.audit import AuditEntry, AuditRecord, canonical_bytes
from tapevault.core.checkpoints import Checkpoint, CheckpointSigner, SignerRecord, signer_record
from tapevault.core.clock import Clock, now_ms
from tapevault.core.journal import GENESIS_LINK, CheckpointWitness, contradiction, format_line

log = logging.getLogger("tapevault.audit")

# Records a transaction integrates. A step holds the GIL (sequencing, hashing) and, on SQLite,
# the write lock for about 45 µs a record, and requests share both: 2,000 held them for ~90 ms
# at a time. Smaller costs more per record (a commit each: 2,000 → 43–45 µs, 500 → 47–54,
# 250 → 60; BENCHMARKS.md, issue 14).
BATCH = 500
# Once a step finds a full batch waiting (a backlog), it goes on in these: on PostgreSQL every
# transaction is several round trips, and a backlog must shrink, not only wait its turn.
BACKLOG_BATCH = 2000
BACKFILL = 20_000  # records of an older log added to the tree per step
TREE_RECHECK_SECONDS = 5.0  # an idle integrator re-reads the tree's extent this often
FAILING_SECONDS = 30.0  # an integrator failing this long makes /healthz say "degraded"


@dataclass(frozen=True, slots=True)
class TreeState:
    head_seq: int
    head_hash: str
    tree_first_seq: int  # the seq of leaf 0
    tree_size: int  # leaves in the tree
    edge: Mapping[merkle.Node, bytes]  # the tree's ``root_nodes`` (a next leaf's left siblings)
    first_seq: int = 1  # where the retained log starts (after pruning) ...
    first_prev_hash: str = "0" * 64  # ... and the hash it links to

    @property
    def tree_current(self) -> bool:
        """Whether the tree holds every integrated record (not still being built over an older
        log's)."""
        return self.tree_first_seq + self.tree_size - 1 == self.head_seq


@dataclass(frozen=True, slots=True)
class IntegrationStep:
    """What one transaction changes: applied only if the head and tree are still at ``from_*``."""

    from_seq: int
    from_tree: int
    head_seq: int
    head_hash: str
    tree_size: int
    records: Sequence[AuditRecord] = ()
    nodes: Sequence[tuple[int, int, bytes]] = ()
    ids: Sequence[int] = ()  # the waiting rows integrated (deleted with it)
    texts: Sequence[str | None] = ()  # each record's entry as stored while waiting (None: anew)


class IntegrationStore(Protocol):
    def try_role(self) -> bool: ...

    def holds_role(self) -> bool: ...

    def release_role(self) -> None: ...

    def incoming(self, limit: int) -> list[tuple[int, AuditEntry, str]]:
        """The oldest waiting records: (id, entry, the entry's stored JSON)."""
        ...

    def waiting(self) -> tuple[int, int | None]: ...

    def waiting_mark(self) -> int | None: ...

    def waiting_through(self, mark: int) -> bool: ...

    def tree_state(self) -> TreeState: ...

    def integrate(self, step: IntegrationStep) -> bool: ...

    def records_between(self, first: int, last: int) -> list[AuditRecord]: ...

    def tree_nodes(self, nodes: set[merkle.Node]) -> dict[merkle.Node, bytes]: ...

    def add_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    def add_signer(self, signer: SignerRecord) -> None:
        """List the key's public half (kept as first listed when it already is)."""
        ...

    def last_checkpoint(self) -> Checkpoint | None: ...

    def hash_at(self, seq: int) -> str | None: ...


class LagCounts(Protocol):
    """Told after each step that integrated something: how long records waited (the metrics
    adapter makes a histogram of it; BENCHMARKS.md reads it)."""

    def integrated(self, lags: list[float]) -> None:
        """Seconds each record of the step waited, from its event to its integration."""
        ...


class _NoCounts:
    def integrated(self, lags: list[float]) -> None:
        pass


def _damaged(entry: AuditEntry) -> AuditEntry:
    """A waiting row the canonical encoding refuses (edited in the database): integrated as a
    record saying so, rather than blocking the log behind it forever."""
    return AuditEntry(
        at_ms=entry.at_ms if type(entry.at_ms) is int else 0,
        action="audit.damaged",
        status=0,
        detail={"unencodable_entry": repr(entry)[:200]},
    )


class Integrator:
    """See the module docstring. Thread-safe: the thread's steps and ``settle``/``checkpoint``
    called from elsewhere take turns on one lock."""

    def __init__(
        self,
        store: IntegrationStore,
        clock: Clock,
        signer: CheckpointSigner | None,
        *,
        interval: float = 0.1,
        checkpoint_seconds: float = 5.0,
        witness: CheckpointWitness | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.signer = signer
        self.witness = witness
        self.interval = interval
        self.checkpoint_seconds = checkpoint_seconds
        self.counts: LagCounts = _NoCounts()
        self.node: str | None = None  # this node's name, listed with the key when it first signs
        self._listed_key: str | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_checkpoint = time.monotonic()
        self._checkpointed_seq = -1
        self._checkpoint_problem: str | None = None
        self._witness_failing = False
        self._failing = False
        self._failing_since = 0.0
        self._failure = ""
        self._role_logged = False
        self._backfill_stopped = False
        # Whether the tree covered every integrated record when last read: a step that found
        # nothing waiting then skips re-reading it (an idle tick is one index probe), except
        # every ``TREE_RECHECK_SECONDS`` (another build's integrator may have left it behind).
        self._tree_current = False
        self._tree_read = 0.0

    # --- the role and the thread ----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="tapevault-audit-integrator", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Integrate what waits, sign a last checkpoint, let go of the role."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(30)
        with self._lock:
            try:
                if self._role():
                    self._integrate_all()
                    self.checkpoint()
            except Exception:
                log.exception("the access log's integrator could not finish; the next one will")
            finally:
                self.store.release_role()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.step()

    def _role(self) -> bool:
        """Whether this process is the integrator (taking the role when nobody holds it)."""
        if self.store.holds_role():
            return True
        if self.store.try_role():
            if self._role_logged:
                log.warning("this process took over as the access log's integrator")
            self._role_logged = True
            return True
        self._role_logged = True
        return False

    def step(self) -> int:
        """One tick: as the integrator, integrate everything waiting and checkpoint when due.
        Never raises (a failure is logged; the records wait in the database for the next)."""
        with self._lock:
            try:
                if not self._role():
                    return 0
                done = self._integrate_all()
                if time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
                    self.checkpoint()
            except Exception as exc:
                if not self._failing:
                    log.exception("the access log's integrator failed; trying again")
                    self._failing_since = time.monotonic()
                self._failing = True
                self._failure = f"{type(exc).__name__}: {str(exc)[:200]}"
                return 0
            if self._failing:
                log.warning("the access log's integrator works again")
                self._failing = False
            return done

    @property
    def problem(self) -> str | None:
        """Why records are not being integrated, once that has lasted ``FAILING_SECONDS`` (they
        stay durable and wait: /healthz says "degraded", requests are still served)."""
        if not self._failing or time.monotonic() - self._failing_since < FAILING_SECONDS:
            return None
        return (
            f"the access log's integrator has failed for "
            f"{time.monotonic() - self._failing_since:.0f} s ({self._failure}); records stay "
            f"durable and wait to be integrated"
        )

    def settle(self, timeout: float) -> bool:
        """Wait until the records durable now are integrated (the audit API's reads, ``flush``):
        integrate them here if this process can be the integrator, else wait for the one that
        is, at most ``timeout`` seconds. True when they are."""
        deadline = time.monotonic() + timeout
        try:
            mark = self.store.waiting_mark()  # not a count: an audit read must stay cheap
            if mark is None:
                return True
            while True:
                with self._lock:
                    if self._role():
                        self._integrate_all()
                if not self.store.waiting_through(mark):
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        except Exception as exc:  # the reader goes on with what is integrated; never a 500
            log.warning("could not wait for the access log's integration: %r", exc)
            return False

    # --- integrating ------------------------------------------------------------------------------

    def _integrate_all(self) -> int:
        """Integrate every waiting record (``BATCH``, then ``BACKLOG_BATCH`` records a
        transaction) and a chunk of an older log's tree."""
        done = 0
        batch = BATCH
        while True:
            waiting = self.store.incoming(batch)
            if not waiting:
                break
            state = self.store.tree_state()
            step = self._sequence(state, waiting)
            if not self.store.integrate(step):
                log.warning("another process integrated the access log meanwhile; re-reading")
                continue
            self._tree_current = state.tree_current
            self._tree_read = time.monotonic()
            done += len(step.records)
            now = now_ms(self.clock)  # integrated (committed) now
            ages = [max(0.0, (now - r.entry.at_ms) / 1000) for r in step.records]
            if ages:
                try:
                    self.counts.integrated(ages)
                except Exception:  # counting never stops integrating
                    log.exception("counting the integration failed")
            if len(waiting) < batch:
                break
            batch = BACKLOG_BATCH
        if self._tree_current and time.monotonic() - self._tree_read < TREE_RECHECK_SECONDS:
            return done  # the tree was current when this step read it: nothing to backfill
        state = self.store.tree_state()
        self._tree_current, self._tree_read = state.tree_current, time.monotonic()
        if not state.tree_current:
            self._backfill(state)  # a chunk a step: new records are never kept waiting for it
        return done

    def _sequence(
        self, state: TreeState, waiting: list[tuple[int, AuditEntry, str]]
    ) -> IntegrationStep:
        records: list[AuditRecord] = []
        # While an older log's tree is still being built, new records join the chain now and
        # the tree when the backfill reaches them (leaves are in seq order).
        appender = merkle.Appender(state.tree_size, state.edge) if state.tree_current else None
        prev, seq = state.head_hash, state.head_seq
        texts: list[str | None] = []
        for _, entry, stored in waiting:
            seq += 1
            text: str | None = stored
            try:
                data = canonical_bytes(seq, entry, prev)
            except (ValueError, TypeError, AttributeError):
                entry, text = _damaged(entry), None
                data = canonical_bytes(seq, entry, prev)
            texts.append(text)
            digest = hashlib.sha256(data).hexdigest()
            records.append(AuditRecord(seq, entry, prev, digest))
            if appender is not None:
                appender.append(merkle.leaf_hash(data))
            prev = digest
        return IntegrationStep(
            from_seq=state.head_seq,
            from_tree=state.tree_size,
            head_seq=seq,
            head_hash=prev,
            tree_size=state.tree_size if appender is None else appender.size,
            records=records,
            nodes=() if appender is None else appender.new,
            ids=[i for i, _, _ in waiting],
            texts=texts,
        )

    def _backfill(self, state: TreeState) -> None:
        """Add a chunk of records integrated before the tree existed (migration 0021) to it.
        A record whose stored hash does not match its content is not vouched for: the backfill
        stops there, says so, and ``tapevault audit verify`` names the record."""
        if self._backfill_stopped or state.tree_first_seq + state.tree_size < state.first_seq:
            return  # stopped at a bad record, or the records it needs were pruned
        first = state.tree_first_seq + state.tree_size
        last = min(state.head_seq, first + BACKFILL - 1)
        appender = merkle.Appender(state.tree_size, state.edge)
        for record in self.store.records_between(first, last):
            if record.seq != state.tree_first_seq + appender.size:
                break  # a gap: the tree cannot go past it
            try:
                data = canonical_bytes(record.seq, record.entry, record.prev_hash)
            except (ValueError, TypeError, AttributeError):
                data = b""
            if hashlib.sha256(data).hexdigest() != record.hash:
                log.error(
                    "the Merkle tree stops before record %d: its content does not match its "
                    "hash (run `tapevault audit verify`)",
                    record.seq,
                )
                self._backfill_stopped = True
                break
            appender.append(merkle.leaf_hash(data))
        if appender.size == state.tree_size:
            self._backfill_stopped = True  # a gap (pruned, removed): nothing more to build on
            return
        self.store.integrate(
            IntegrationStep(
                from_seq=state.head_seq,
                from_tree=state.tree_size,
                head_seq=state.head_seq,
                head_hash=state.head_hash,
                tree_size=appender.size,
                nodes=appender.new,
            )
        )

    # --- checkpoints ------------------------------------------------------------------------------

    @property
    def checkpoint_problem(self) -> str | None:
        """Why checkpoints are not being signed (the database contradicts the journal), or None."""
        return self._checkpoint_problem

    def check_witness(self) -> str | None:
        """Compare the database's log with the witness's newest checkpoint (at start, and before
        every signature); remember and log what contradicts it."""
        if self.signer is None or self.witness is None:
            return None
        newest = self.witness.newest({self.signer.key_id: self.signer.public_key})
        problem = None
        if newest is not None:
            state = self.store.tree_state()
            first_seq, first_prev = state.first_seq, state.first_prev_hash
            if newest.size == first_seq - 1:
                at: str | None = first_prev
            else:
                at = self.store.hash_at(newest.size) if newest.size <= state.head_seq else None
            problem = contradiction(newest, state.head_seq, first_seq, at)
        if problem is not None and problem != self._checkpoint_problem:
            log.error(
                "audit checkpoints stopped, nothing will be signed: %s. If this database was "
                "restored or replaced on purpose, move the checkpoint journal aside (keep it) "
                "and restart",
                problem,
            )
        elif problem is None and self._checkpoint_problem is not None:
            log.warning("the access log agrees with the checkpoint journal again")
        self._checkpoint_problem = problem
        return problem

    def checkpoint(self) -> Checkpoint | None:
        """Sign the current head (if it moved since the last checkpoint and the witness does not
        contradict it): the chain's head and, once the tree covers it, the tree's root."""
        if self.signer is None:
            return None
        with self._lock:
            self._last_checkpoint = time.monotonic()
            try:
                state = self.store.tree_state()
                if state.head_seq == 0 or state.head_seq == self._checkpointed_seq:
                    return None
                if self.check_witness() is not None:
                    return None  # never "repair": a signature now would vouch for a forged head
                last = self.store.last_checkpoint()
                if last is not None and last.size >= state.head_seq:
                    self._checkpointed_seq = last.size
                    return None
                tree = None
                if state.tree_current:
                    root = merkle.fold([state.edge[n] for n in merkle.root_nodes(state.tree_size)])
                    tree = (state.tree_size, root.hex())
                at_ms = now_ms(self.clock)
                if self._listed_key != self.signer.key_id:
                    # Whichever node holds the role signs: list its key for verifiers first.
                    self.store.add_signer(signer_record(self.signer, self.node, at_ms))
                    self._listed_key = self.signer.key_id
                checkpoint = self.signer.sign(state.head_seq, state.head_hash, at_ms, tree=tree)
                self.store.add_checkpoint(checkpoint)
            except Exception:
                log.exception("could not write an audit checkpoint; will try again")
                return None
            self._checkpointed_seq = cp_size = checkpoint.size
            line = None
            if self.witness is not None:
                try:
                    line = self.witness.append(checkpoint, self.signer)
                except Exception:
                    if not self._witness_failing:  # once, not every few seconds
                        log.exception(
                            "could not append audit checkpoint %d to the journal", cp_size
                        )
                    self._witness_failing = True
                else:
                    if self._witness_failing:
                        log.warning("audit checkpoints reach the journal again")
                    self._witness_failing = False
            # Also in the process log: a copy outside the database that a log shipper keeps,
            # which `tapevault audit verify --checkpoints FILE` reads back (unlinked when the
            # journal did not take it, but signed all the same).
            log.info(
                "audit checkpoint: %s", line or format_line(checkpoint, GENESIS_LINK, self.signer)
            )
            return checkpoint
