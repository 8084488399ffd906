"""Tamper-evident access log, part 4: the checkpoint journal, a copy outside the database.

Someone who can write the database can delete checkpoint rows, then rewrite or cut the records
they covered, and the database alone no longer tells. So every signed checkpoint is also a line
of an append-only journal (a file beside the data, the process log, a witness's copy) that the
verifier compares the database with. This module is the pure part: the line format, reading and
checking lines, and the start-up question "does the database contradict the journal?".

A line follows the C2SP tlog-checkpoint note (origin, size, base64 root hash, then signatures),
on one line so a torn write or an edit is one bad line::

    tapevault/audit 40 <head, base64> <at_ms> <prev, base64> — <key id> <checkpoint sig> <line sig>

The checkpoint signature is the database row's (``checkpoints.py``), so a journal line *is* the
checkpoint. ``prev`` is the SHA-256 of the journal's previous line and the line signature covers
it too: a line removed from (or inserted into) the middle of the journal breaks the next link,
and nobody without the key can mend it. Only the newest lines can be cut unnoticed locally; the
copies in the process log and at a witness are for that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tapevault.core.auditverify import Finding
from tapevault.core.checkpoints import (
    Checkpoint,
    CheckpointSigner,
    verify_checkpoint_signature,
    verify_link_signature,
)

ORIGIN = "tapevault/audit"
GENESIS_LINK = base64.b64encode(bytes(32)).decode()
_DASH = "\u2014"
MAX_LINE = 1024  # a real line is ~300 bytes; longer ones are refused unread


@dataclass(frozen=True, slots=True)
class JournalLine:
    """One parsed line: the checkpoint, the link to the line before, and the line's signature."""

    number: int  # 1-based line number in its file
    checkpoint: Checkpoint
    prev: str  # base64 SHA-256 of the previous line's text
    link_signature: str
    text: str  # the line as written, without its newline


class CheckpointWitness(Protocol):
    """Somewhere outside the database that keeps every checkpoint the log signs."""

    def append(self, checkpoint: Checkpoint, signer: CheckpointSigner) -> str:
        """Keep ``checkpoint`` durably; returns the line written (for the process log)."""
        ...

    def newest(self, public_keys: Mapping[str, Ed25519PublicKey]) -> Checkpoint | None:
        """The largest validly signed checkpoint among the newest ones kept (None: none)."""
        ...


def line_hash(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _head_b64(head_hash: str) -> str:
    return base64.b64encode(bytes.fromhex(head_hash)).decode()


def link_message(body: str) -> bytes:
    return f"tapevault-audit-journal-v1\n{body}".encode()


def format_line(checkpoint: Checkpoint, prev: str, signer: CheckpointSigner) -> str:
    """The journal line for ``checkpoint`` after a line whose ``line_hash`` is ``prev``."""
    cp = checkpoint
    body = (
        f"{ORIGIN} {cp.size} {_head_b64(cp.head_hash)} {cp.at_ms} {prev} "
        f"{_DASH} {cp.key_id} {cp.signature}"
    )
    return f"{body} {signer.sign_link(link_message(body))}"


def parse_line(text: str, number: int, *, prefixed: bool = False) -> JournalLine | None:
    """The line's fields, or None when it is not a journal line at all. ``prefixed``: a
    process-log line, where the journal line follows a time, a level and a logger name."""
    if len(text) > MAX_LINE:
        return None
    at = text.find(ORIGIN + " ") if prefixed else 0 if text.startswith(ORIGIN + " ") else -1
    if at < 0:
        return None
    text = text[at:].rstrip("\r\n")  # a process-log line has a prefix (time, level, logger)
    parts = text.split(" ")
    if len(parts) != 9 or parts[5] != _DASH or not parts[1].isdigit() or not parts[3].isdigit():
        return None
    try:
        head = base64.b64decode(parts[2], validate=True)
        prev = base64.b64decode(parts[4], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(head) != 32 or len(prev) != 32 or len(parts[1]) > 18 or len(parts[3]) > 18:
        return None
    cp = Checkpoint(int(parts[1]), head.hex(), int(parts[3]), parts[6], parts[7])
    return JournalLine(number, cp, parts[4], parts[8], text)


def _body(line: JournalLine) -> str:
    return line.text.rsplit(" ", 1)[0]


class JournalReader:
    """A journal's (or a copy's) checkpoints, streamed in ascending size order; what is wrong
    with its lines collects in ``problems`` (bounded), crash leftovers in ``notes``.

    Each line is checked: parsed, both signatures good, and (``linked``: the journal itself, not
    a process log with other lines between) linking to the line before it. Processes appending
    together may write sizes slightly out of order, so lines are sorted within a window of
    ``REORDER`` lines; one further out of place is a problem. Memory stays bounded by that window
    however long the journal is.

    A process killed in the middle of an append leaves a partial line without its newline. That
    is a note, not a problem, when it is the last line, or when the next append (which ends it
    with a newline) links to it: nobody without the key can write such a successor, so it was
    there when the journal was appended to, not put there later.
    """

    REORDER = 256
    MAX_PROBLEMS = 50

    def __init__(
        self,
        texts: Iterable[str],
        public_keys: Mapping[str, Ed25519PublicKey],
        *,
        linked: bool,
    ) -> None:
        self.texts = texts
        self.public_keys = public_keys
        self.linked = linked
        self.lines = 0  # good checkpoint lines
        self.problems: list[str] = []
        self.more_problems = 0
        self.notes: list[str] = []

    def _problem(self, text: str) -> None:
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.more_problems += 1

    def __iter__(self) -> Iterator[Checkpoint]:
        window: list[tuple[int, int, Checkpoint]] = []
        last = -1
        for line in self._good_lines():
            heapq.heappush(window, (line.checkpoint.size, line.number, line.checkpoint))
            if len(window) > self.REORDER:
                size, number, cp = heapq.heappop(window)
                if size < last:
                    self._problem(f"journal line {number} (checkpoint {size}) is out of order")
                    continue
                last = size
                yield cp
        while window:
            yield heapq.heappop(window)[2]

    def _good_lines(self) -> Iterator[JournalLine]:
        prev = GENESIS_LINK
        torn: int | None = None  # the number of a bad line that only its successor can excuse
        for number, raw in enumerate(self.texts, start=1):
            text = raw.rstrip("\r\n")
            line = parse_line(text, number, prefixed=not self.linked)
            if line is None:
                if self.linked and text.strip():
                    if torn is not None:
                        self._problem(f"journal line {torn} is not a checkpoint line")
                    torn = number
                    if not raw.endswith("\n"):
                        self.notes.append(
                            f"journal line {number} is incomplete: a process stopped while "
                            f"appending it"
                        )
                        torn = None
                prev = line_hash(text)
                continue
            good = verify_checkpoint_signature(
                line.checkpoint, self.public_keys
            ) and verify_link_signature(
                link_message(_body(line)),
                line.link_signature,
                line.checkpoint.key_id,
                self.public_keys,
            )
            if torn is not None:
                if good and line.prev == prev:
                    self.notes.append(
                        f"journal line {torn} is an incomplete write that the next append "
                        f"ended (a process stopped while appending it)"
                    )
                else:
                    self._problem(f"journal line {torn} is not a checkpoint line")
                torn = None
            if not good and line.checkpoint.key_id not in self.public_keys:
                self._problem(
                    f"journal line {number} (checkpoint {line.checkpoint.size}) is signed by "
                    f"key {line.checkpoint.key_id!r}, which is not trusted (or the line was "
                    f"altered): its signature cannot be checked"
                )
            elif not good:
                self._problem(
                    f"journal line {number} (checkpoint {line.checkpoint.size}) was altered: "
                    f"its signature does not verify"
                )
            else:
                if self.linked and line.prev != prev:
                    self._problem(
                        f"journal line {number} (checkpoint {line.checkpoint.size}) does not "
                        f"follow the line before it: a line was removed or inserted there"
                    )
                self.lines += 1
                yield line
            prev = line_hash(line.text)
        if torn is not None:
            self._problem(f"journal line {torn} is not a checkpoint line")


class CheckpointMerge:
    """The database's checkpoint rows and those kept outside it, as one stream in ascending size
    order (what ``auditverify.verify`` takes), noting on the way each checkpoint of the retained
    log that is outside but has no row: rows an attacker deleted before rewriting what they
    covered. (Pruning keeps the checkpoint at its cut, so only older ones are gone lawfully.)"""

    MAX_DELETED = 20

    def __init__(
        self, rows: Iterable[Checkpoint], outside: Iterable[Iterable[Checkpoint]], first_seq: int
    ) -> None:
        self.rows = rows
        self.outside = list(outside)
        self.first_seq = first_seq
        self.deleted: list[Finding] = []
        self.more_deleted = 0

    def __iter__(self) -> Iterator[Checkpoint]:
        streams = [((cp.size, 0, cp) for cp in self.rows)]
        streams += [((cp.size, 1, cp) for cp in group) for group in self.outside]
        merged = heapq.merge(*streams, key=lambda item: (item[0], item[1]))
        for size, items in itertools.groupby(merged, key=lambda item: item[0]):
            group = list(items)
            if size >= self.first_seq - 1 and all(tag == 1 for _, tag, _ in group):
                self._deleted(size)
            # One checkpoint kept in several places is one: the journal's lines carry the chain
            # fields, the row also the tree note.
            same: dict[tuple[int, str, int, str, str], Checkpoint] = {}
            for _, _, cp in group:
                key = (cp.size, cp.head_hash, cp.at_ms, cp.key_id, cp.signature)
                if key not in same or cp.note_signature is not None:
                    same[key] = cp
            yield from sorted(same.values(), key=lambda cp: (cp.at_ms, cp.signature))

    def _deleted(self, size: int) -> None:
        if len(self.deleted) >= self.MAX_DELETED:
            self.more_deleted += 1
            return
        self.deleted.append(
            Finding(
                size,
                "checkpoint",
                f"checkpoint {size} was deleted from the database: the checkpoint journal has it",
            )
        )


def contradiction(
    newest: Checkpoint | None, head_seq: int, first_seq: int, hash_at: str | None
) -> str | None:
    """Why the database's log contradicts the journal's newest checkpoint, or None.

    ``hash_at`` is the database's hash of record ``newest.size`` (its ``first_prev_hash`` when
    that record was pruned at the cut). Only the newest checkpoint is needed: any change to an
    earlier record that keeps the chain consistent changes that record's hash too.
    """
    if newest is None or newest.size < first_seq - 1:
        return None
    if head_seq < newest.size:
        return (
            f"the database's access log ends at record {head_seq}, but checkpoint "
            f"{newest.size} in the checkpoint journal covers {newest.size} records: the "
            f"database was rolled back or records were removed"
        )
    if hash_at != newest.head_hash:
        return (
            f"record {newest.size} in the database is not the one checkpoint {newest.size} in "
            f"the checkpoint journal was signed over: the log was rewritten"
        )
    return None
