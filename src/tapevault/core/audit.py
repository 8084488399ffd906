"""Tamper-evident access log, part 1: records and their SHA-256 hash chain.

Every record's hash covers its own content, its ``seq`` and the previous record's hash, so editing,
deleting, inserting, reordering or renumbering rows breaks the chain somewhere. Someone who can
write the database can still rewrite a whole suffix consistently (or truncate the end); the signed
checkpoints (``checkpoints.py``) catch that, because the signing key is a file the database writer
does not have. ``auditverify.py`` names the *first* bad record and its kind. This is the pure
logic; storage (``db/auditstore.py``) and the CLI live elsewhere.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import orjson

GENESIS_HASH = "0" * 64

HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
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


# --- the verifier's fast lane: canonical bytes straight from stored JSON ----------------------


class Encoded(NamedTuple):
    """A stored record whose canonical bytes were computed straight from its parsed JSON
    (``encoded``), so a verifier can check its hash without building an ``AuditEntry``.

    ``values`` are the entry's fields (plus ``seq`` and ``prev_hash``: the encoded document);
    ``record`` builds the full record only when the verifier has to look closer (a record out
    of place, or a finding nearby).
    """

    seq: int
    prev_hash: str
    hash: str
    data: bytes
    values: dict[str, Any]

    def record(self) -> AuditRecord:
        values = {name: self.values[name] for name in _ENTRY_KEYS}  # without seq and prev_hash
        values["ranges"] = tuple(tuple(pair) for pair in values["ranges"])
        return AuditRecord(self.seq, AuditEntry(**values), self.prev_hash, self.hash)


_ENTRY_KEYS = frozenset(f.name for f in fields(AuditEntry))
_SCALARS = (str, bool, int, type(None))  # exact types, not subclasses: no float, no IntEnum
# The types of every field, fetched in one C call: a record's type signature, checked once per
# signature (``_signature_fits``) and remembered, instead of one branch per field per record.
_ENTRY_NAMES = tuple(sorted(_ENTRY_KEYS))
_values_of = operator.itemgetter(*_ENTRY_NAMES)
_NONE = type(None)
_SIGNATURES: dict[tuple[type, ...], bool] = {}
_MAX_SIGNATURES = 4096  # distinct signatures are few (which text fields are None); bounded anyway


def _signature_fits(signature: tuple[type, ...]) -> bool:
    """Whether fields of these exact types pass ``canonical_bytes``' checks as they are (ranges'
    pairs and detail's content are checked per record)."""
    for name, kind in zip(_ENTRY_NAMES, signature, strict=True):
        if name in _INT_FIELDS:
            fits = kind is int
        elif name == "action":
            fits = kind is str
        elif name == "ranges":
            fits = kind is list
        elif name == "detail":
            fits = kind is dict or kind is _NONE
        else:
            fits = kind is str or kind is _NONE
        if not fits:
            return False
    return True


def _plain(value: object, depth: int) -> bool:
    """Whether ``_json_value(value, ...)`` at ``depth`` returns an equal value without raising
    (then ``orjson`` encodes both alike). Anything unsure answers False: the slow path decides."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth >= _MAX_DEPTH:
        return False
    if kind is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())  # type: ignore[attr-defined]
    if kind is list:
        return all(_plain(v, depth + 1) for v in value)  # type: ignore[attr-defined]
    return False


def encoded(
    seq: object, prev_hash: object, hash_: object, values: dict[str, Any]
) -> Encoded | None:
    """The record ``AuditRecord(seq, AuditEntry(**values), prev_hash, hash_)`` as ``Encoded``,
    with the bytes ``canonical_bytes`` gives for it, or None when that is not certain.

    ``values`` is a parsed stored entry (lists where the entry has tuples). The fast lane only
    takes what ``canonical_bytes`` provably encodes to the same bytes: exactly the entry's keys,
    ints that are ``int`` (not bool, not float), text that is ``str`` (or None where allowed),
    ``ranges`` a list of two-int lists and ``detail`` None or plain JSON without floats. Any
    other value returns None and the caller takes the slow path, which then accepts or refuses
    it as it always did: this lane never accepts more than the slow path.

    ``values`` is used as the document itself (``seq`` and ``prev_hash`` are added to it): the
    caller must not reuse it.
    """
    if len(values) != len(_ENTRY_NAMES) or type(seq) is not int or type(prev_hash) is not str:
        return None
    try:
        # Every field present and no other (as many keys as fields).
        signature = tuple(map(type, _values_of(values)))
    except KeyError:
        return None
    fits = _SIGNATURES.get(signature)
    if fits is None:
        fits = _signature_fits(signature)
        if len(_SIGNATURES) < _MAX_SIGNATURES:
            _SIGNATURES[signature] = fits
    if not fits or type(hash_) is not str:
        return None
    for pair in values["ranges"]:
        if (
            type(pair) is not list
            or len(pair) != 2
            or type(pair[0]) is not int
            or type(pair[1]) is not int
        ):
            return None
    detail = values["detail"]
    if detail is not None and (type(detail) is not dict or not _plain(detail, 0)):
        return None
    values["seq"] = seq
    values["prev_hash"] = prev_hash
    try:
        data = orjson.dumps(values, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # out-of-range int, lone surrogate: the slow path says so
        return None
    return Encoded(seq, prev_hash, hash_, data, values)
