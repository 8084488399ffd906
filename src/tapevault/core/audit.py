"""Tamper-evident access log: a SHA-256 hash chain with Ed25519-signed checkpoints.

Every record's hash covers its own content, its ``seq`` and the previous record's hash, so editing,
deleting, inserting, reordering or renumbering rows breaks the chain somewhere. Someone who can
write the database can still rewrite a whole suffix consistently (or truncate the end); the signed
checkpoints catch that, because the signing key is a file the database writer does not have.

This module is the pure logic: encoding, hashing, chaining, signing and a one-pass verifier that
names the *first* bad record and its kind. Storage and the CLI live elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tapevault.fsutil import fsync_dir

GENESIS_HASH = "0" * 64

# How far the verifier looks ahead (and remembers behind) to tell a reorder from a removal or an
# insertion. Tampering that moves a record further than this is still reported, as two findings.
WINDOW = 64

_HASH = re.compile(r"[0-9a-f]{64}")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{86}")  # 64 bytes, urlsafe base64 without padding
_CHECKPOINT_DOMAIN = "tapevault-audit-checkpoint-v1"
_MAX_DEPTH = 16


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One access event, as callers append it (the chain adds ``seq`` and the hashes)."""

    at_ms: int
    action: str
    status: int
    tenant_id: str | None = None
    actor_kind: str | None = None
    actor_id: str | None = None  # a token jti or key id/prefix; never a secret
    provider_id: str | None = None
    session_id: str | None = None
    recording_id: str | None = None
    mode: str | None = None
    ranges: tuple[tuple[int, int], ...] = ()
    bytes_sent: int = 0
    error: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A chained, stored record: ``hash`` = sha256(canonical_bytes(seq, entry, prev_hash))."""

    seq: int
    entry: AuditEntry
    prev_hash: str
    hash: str


# --- canonical encoding ---------------------------------------------------------------------------


_INT_FIELDS = ("at_ms", "status", "bytes_sent")
_TEXT_FIELDS = (
    "action",
    "tenant_id",
    "actor_kind",
    "actor_id",
    "provider_id",
    "session_id",
    "recording_id",
    "mode",
    "error",
    "client_ip",
    "user_agent",
    "request_id",
)


def _int(name: str, value: object) -> int:
    # ``type(...) is int`` also refuses bool and float: both would encode differently after a
    # round trip through a database column.
    if type(value) is not int:
        raise ValueError(f"audit field {name} must be an int, not {type(value).__name__}")
    return value


def _json_value(value: object, where: str, depth: int = 0) -> object:
    """A plain copy of ``value`` limited to what every database stores exactly: no floats."""
    if value is None or isinstance(value, str | bool) or type(value) is int:
        return value
    if depth >= _MAX_DEPTH:
        raise ValueError(f"audit {where} is nested too deeply")
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"audit {where} has a non-string key {key!r}")
            out[key] = _json_value(item, f"{where}.{key}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{where}[]", depth + 1) for item in value]
    if isinstance(value, float):
        raise ValueError(f"audit {where} holds a float ({value!r}); floats do not round-trip")
    raise ValueError(f"audit {where} holds an unsupported {type(value).__name__}")


def canonical_bytes(seq: int, entry: AuditEntry, prev_hash: str) -> bytes:
    """The exact bytes a record's hash covers: sorted-key JSON of every entry field, seq, prev_hash.

    ``seq`` is included on purpose: renumbering rows (to hide a deletion or an insertion) changes
    the bytes, so the rows stop verifying under their new numbers. Floats are refused anywhere
    (``ValueError``) because they do not come back bit-identical from every database.
    """
    e = entry
    if (
        type(seq) is not int
        or type(e.at_ms) is not int
        or type(e.status) is not int
        or type(e.bytes_sent) is not int
    ):
        _int("seq", seq)
        for name in _INT_FIELDS:
            _int(name, getattr(e, name))
    if not isinstance(prev_hash, str):
        raise ValueError("prev_hash must be a string")
    ranges = []
    for pair in e.ranges:
        if len(pair) != 2:
            raise ValueError("audit field ranges must hold (start, end) pairs")
        ranges.append([_int("ranges", pair[0]), _int("ranges", pair[1])])
    detail = e.detail
    if detail is not None and not isinstance(detail, Mapping):
        raise ValueError("audit field detail must be a JSON object or None")
    doc = {
        "seq": seq,
        "prev_hash": prev_hash,
        "at_ms": e.at_ms,
        "action": e.action,
        "status": e.status,
        "tenant_id": e.tenant_id,
        "actor_kind": e.actor_kind,
        "actor_id": e.actor_id,
        "provider_id": e.provider_id,
        "session_id": e.session_id,
        "recording_id": e.recording_id,
        "mode": e.mode,
        "ranges": ranges,
        "bytes_sent": e.bytes_sent,
        "error": e.error,
        "client_ip": e.client_ip,
        "user_agent": e.user_agent,
        "request_id": e.request_id,
        "detail": None if detail is None else _json_value(detail, "detail"),
    }
    for name in _TEXT_FIELDS:
        value = doc[name]
        if not isinstance(value, str) and (value is not None or name == "action"):
            raise ValueError(f"audit field {name} must be a string, not {type(value).__name__}")
    try:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # out-of-range int, lone surrogate in a string
        raise ValueError(f"audit entry cannot be encoded: {exc}") from exc


def record_hash(seq: int, entry: AuditEntry, prev_hash: str) -> str:
    """SHA-256 (hex) of the record's canonical bytes."""
    return hashlib.sha256(canonical_bytes(seq, entry, prev_hash)).hexdigest()


def chain(entries: Sequence[AuditEntry], *, prev_hash: str, first_seq: int) -> list[AuditRecord]:
    """Records with consecutive seqs from ``first_seq``, each linked to the one before."""
    out: list[AuditRecord] = []
    for offset, entry in enumerate(entries):
        seq = first_seq + offset
        digest = record_hash(seq, entry, prev_hash)
        out.append(AuditRecord(seq, entry, prev_hash, digest))
        prev_hash = digest
    return out


# --- signed checkpoints ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement "the log had ``size`` as its last seq, and that record hashed to X"."""

    size: int
    head_hash: str
    at_ms: int
    key_id: str
    signature: str  # urlsafe base64, no padding


def checkpoint_message(size: int, head_hash: str, at_ms: int) -> bytes:
    """The signed bytes. Fields are validated first so no two checkpoints share a message."""
    if type(size) is not int or size < 0 or type(at_ms) is not int or at_ms < 0:
        raise ValueError("checkpoint size and at_ms must be non-negative ints")
    if not isinstance(head_hash, str) or not _HASH.fullmatch(head_hash):
        raise ValueError("checkpoint head_hash must be 64 lowercase hex digits")
    return f"{_CHECKPOINT_DOMAIN}\n{size}\n{head_hash}\n{at_ms}".encode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class CheckpointSigner:
    """Signs checkpoints with an Ed25519 key; ``key_id`` names its public half."""

    __slots__ = ("_key", "key_id")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.key_id = _key_id(private_key.public_key())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, size: int, head_hash: str, at_ms: int) -> Checkpoint:
        signature = self._key.sign(checkpoint_message(size, head_hash, at_ms))
        return Checkpoint(size, head_hash, at_ms, self.key_id, _b64(signature))

    def public_key_pem(self) -> str:
        """SubjectPublicKeyInfo PEM: what verifiers are given (the private key never leaves)."""
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


def verify_checkpoint_signature(
    cp: Checkpoint, public_keys: Mapping[str, Ed25519PublicKey]
) -> bool:
    """True when ``cp`` was signed by the key it names and that key is one of ``public_keys``."""
    key = public_keys.get(cp.key_id)
    if key is None or not isinstance(cp.signature, str) or not _SIGNATURE.fullmatch(cp.signature):
        return False
    try:
        message = checkpoint_message(cp.size, cp.head_hash, cp.at_ms)
        key.verify(base64.urlsafe_b64decode(cp.signature + "=="), message)
    except (ValueError, InvalidSignature):
        return False
    return True


def _parse_private_key(data: bytes, path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(
            f"audit checkpoint key {path} is not an unencrypted PEM private key: {exc}"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"audit checkpoint key {path} is not an Ed25519 key")
    return key


def _create_key_file(path: Path) -> Ed25519PrivateKey:
    """Write a new key without ever exposing a partial or world-readable file.

    The temp file is created 0600 in the same directory, fsynced, then hard-linked into place:
    a link, unlike a rename, fails if another process created the key first, so two servers
    starting together end up sharing one key instead of silently replacing each other's.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)  # the umask may only remove bits, but be explicit
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _parse_private_key(path.read_bytes(), path)  # another process won the race
        except OSError:
            os.rename(tmp, path)  # filesystems without hard links: plain atomic rename
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return key


def load_or_create_signer(path: Path) -> CheckpointSigner:
    """The signer whose PKCS8 PEM key is at ``path``, creating the file (0600) if it is missing.

    Any unreadable or invalid file raises ``ValueError`` naming the path: replacing a damaged key
    silently would make every earlier checkpoint unverifiable.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        try:
            return CheckpointSigner(_create_key_file(path))
        except OSError as exc:
            raise ValueError(f"cannot create audit checkpoint key {path}: {exc}") from exc
    except OSError as exc:
        raise ValueError(f"cannot read audit checkpoint key {path}: {exc}") from exc
    return CheckpointSigner(_parse_private_key(data, path))


def load_public_keys(pems: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id, from SubjectPublicKeyInfo PEM text."""
    keys: dict[str, Ed25519PublicKey] = {}
    for number, pem in enumerate(pems, start=1):
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"public key #{number} is not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"public key #{number} is not an Ed25519 key")
        keys[_key_id(key)] = key
    return keys


# --- verification ---------------------------------------------------------------------------------


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
    ) -> None:
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
        self.head: AuditRecord | None = None
        # checkpoints: merged by size as slots settle (one slot late, see _settle)
        self.public_keys = public_keys
        self.cps: Iterator[Checkpoint] = iter(checkpoints)
        self.cp_next: Checkpoint | None = None
        self.cps_open = True  # the checkpoint iterator may have more
        self.cp_last_size: int | None = None
        self.cp_count = 0
        self.good_size = first_seq - 1
        self.pending_slot: int | None = None  # the last settled slot, checked one step late
        self.pending_hash = ""
        self.held: deque[tuple[int, str]] = deque()  # settled slots held back during a reorder

    # - driving

    def run(self, records: Iterable[AuditRecord]) -> VerifyReport:
        for rec in records:
            self.rows += 1
            self.head = rec
            self._admit(_Node(rec, self.rows))
            if len(self.ahead) > WINDOW:
                self._step()
                if self._full():
                    return self._report()
        while self.ahead:
            self._step()
            if self._full():
                return self._report()
        self._finish()
        return self._report()

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
        if _hashes_under(rec, rec.seq):
            node.t = rec.seq  # the common case: one hash, nothing else to try
        else:
            self._resolve(node, self._candidates(rec))
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
        if rec.prev_hash in self.by_hash or not _HASH.fullmatch(rec.prev_hash):
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
            or not _HASH.fullmatch(rec.prev_hash)
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
                actual: str | None = self.first_prev_hash
            else:
                actual = head_hash if cp.size == slot else None
            if actual == cp.head_hash:
                self.good_size = max(self.good_size, cp.size)
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
            self._emit(
                cp.size,
                "checkpoint",
                f"checkpoint {cp.size} is signed by unknown key {cp.key_id!r}",
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
            if self._signature_ok(cp) and cp.size > last_slot:
                beyond = max(beyond, cp.size)
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
    records: Iterable[AuditRecord],
    checkpoints: Iterable[Checkpoint],
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    first_prev_hash: str = GENESIS_HASH,
    first_seq: int = 1,
    max_findings: int = 20,
) -> VerifyReport:
    """Check the chain and the checkpoints in one pass; findings name the first bad record.

    ``records`` must come in ascending stored-seq order and ``checkpoints`` in ascending size
    order (both as the database returns them with ORDER BY); memory stays bounded by a window of
    ``WINDOW`` records either side. ``first_seq``/``first_prev_hash`` say where the retained log
    starts after pruning. Scanning stops once ``max_findings`` findings were made.
    """
    if max_findings < 1:
        raise ValueError("max_findings must be at least 1")
    verifier = _Verifier(checkpoints, public_keys, first_prev_hash, first_seq, max_findings)
    return verifier.run(records)
