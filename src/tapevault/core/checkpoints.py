"""Tamper-evident access log, part 2: Ed25519-signed checkpoints of the chain's head.

A checkpoint signs (log size, head hash, time) with a key kept in a file, not in the database: an
attacker who can rewrite rows, and so re-chain a whole suffix consistently, cannot re-sign, and
the next checkpoint gives them away (``auditverify.py``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tapevault.core.audit import HASH_PATTERN
from tapevault.fsutil import fsync_dir

_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{86}")  # 64 bytes, urlsafe base64 without padding
_CHECKPOINT_DOMAIN = "tapevault-audit-checkpoint-v1"
NOTE_ORIGIN = "tapevault/audit"  # the signed note's origin line and key name


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement "the log had ``size`` as its last seq, and that record hashed to X";
    since the Merkle tree (``merkle.py``), also "and the tree of its ``tree_size`` leaves has
    root ``root_hash``", signed as a C2SP signed note (``note_signature``; None on checkpoints
    signed before the tree existed, or while an old log's tree is still being built)."""

    size: int
    head_hash: str
    at_ms: int
    key_id: str
    signature: str  # urlsafe base64, no padding
    tree_size: int | None = None
    root_hash: str | None = None  # hex
    note_signature: str | None = None  # the signed note's signature line value (std base64)


def checkpoint_message(size: int, head_hash: str, at_ms: int) -> bytes:
    """The signed bytes. Fields are validated first so no two checkpoints share a message."""
    if type(size) is not int or size < 0 or type(at_ms) is not int or at_ms < 0:
        raise ValueError("checkpoint size and at_ms must be non-negative ints")
    if not isinstance(head_hash, str) or not HASH_PATTERN.fullmatch(head_hash):
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

    def sign(
        self,
        size: int,
        head_hash: str,
        at_ms: int,
        *,
        tree: tuple[int, str] | None = None,
        origin: str = NOTE_ORIGIN,
    ) -> Checkpoint:
        """The chain checkpoint, and with ``tree`` (leaves, root hex) its signed note too."""
        signature = self._key.sign(checkpoint_message(size, head_hash, at_ms))
        if tree is None:
            return Checkpoint(size, head_hash, at_ms, self.key_id, _b64(signature))
        tree_size, root = tree
        body = note_body(origin, tree_size, root)
        note = base64.b64encode(
            note_key_hash(origin, self.public_key) + self._key.sign(body.encode())
        ).decode()
        return Checkpoint(
            size, head_hash, at_ms, self.key_id, _b64(signature), tree_size, root, note
        )

    def sign_link(self, message: bytes) -> str:
        """A signature over other bytes than a checkpoint's (the journal's line links)."""
        return _b64(self._key.sign(message))

    def public_key_pem(self) -> str:
        """SubjectPublicKeyInfo PEM: what verifiers are given (the private key never leaves)."""
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


# --- C2SP signed notes (tlog-checkpoint, signed-note) ------------------------------------------
#
# The checkpoint as outside tools read it: ``<origin>\n<tree size>\n<root, base64>\n``, then a
# blank line and ``— <key name> <base64(key hash || Ed25519 signature)>``. The key name is the
# origin; the key hash is the first 4 bytes of SHA-256(name || "\n" || 0x01 || public key).
# A witness verifies it with the vkey ``note_vkey`` gives and adds its own signature line.

_NOTE_ED25519 = b"\x01"


def note_body(origin: str, tree_size: int, root_hex: str) -> str:
    root = base64.b64encode(bytes.fromhex(root_hex)).decode()
    return f"{origin}\n{tree_size}\n{root}\n"


def note_key_hash(name: str, key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _NOTE_ED25519 + _raw_public(key)).digest()[:4]


def note_vkey(name: str, key: Ed25519PublicKey) -> str:
    """The verifier key in the signed-note text form: ``<name>+<hash hex>+<base64 key>``."""
    raw = base64.b64encode(_NOTE_ED25519 + _raw_public(key)).decode()
    return f"{name}+{note_key_hash(name, key).hex()}+{raw}"


def parse_vkey(text: str, origin: str = NOTE_ORIGIN) -> Ed25519PublicKey:
    """The public key of a verifier key in ``note_vkey``'s form; ``ValueError`` unless it is one
    for ``origin`` whose key hash matches its key (a hand-edited or foreign vkey)."""
    parts = text.strip().split("+", 2)  # the base64 key may hold "+" itself
    if len(parts) != 3 or parts[0] != origin:
        raise ValueError(f"not a {origin} verifier key (<name>+<hash>+<key>)")
    try:
        raw = base64.b64decode(parts[2], validate=True)
    except ValueError as exc:
        raise ValueError("the verifier key's key is not base64") from exc
    if len(raw) != 33 or raw[:1] != _NOTE_ED25519:
        raise ValueError("the verifier key is not an Ed25519 key")
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if note_key_hash(origin, key).hex() != parts[1]:
        raise ValueError("the verifier key's hash does not match its key")
    return key


def key_id_of(key: Ed25519PublicKey) -> str:
    """The key id checkpoints name their signer by."""
    return _key_id(key)


@dataclass(frozen=True, slots=True)
class SignerRecord:
    """A checkpoint key as the database lists it (``audit_signers``): which key signed, from
    which node, since when. A statement of the database, not a reason to trust the key: whoever
    can write the database can add one (``tapevault audit verify`` says where it took each key)."""

    key_id: str
    vkey: str  # the signed-note verifier key (``note_vkey``)
    node: str | None  # the node (DATA_DIR/node-id) that first signed with it
    first_ms: int


def signer_record(signer: CheckpointSigner, node: str | None, at_ms: int) -> SignerRecord:
    return SignerRecord(signer.key_id, note_vkey(NOTE_ORIGIN, signer.public_key), node, at_ms)


def note_text(cp: Checkpoint, origin: str = NOTE_ORIGIN) -> str | None:
    """The checkpoint as a C2SP signed note, or None when it has no tree signature."""
    if cp.tree_size is None or cp.root_hash is None or cp.note_signature is None:
        return None
    return f"{note_body(origin, cp.tree_size, cp.root_hash)}\n\u2014 {origin} {cp.note_signature}\n"


def verify_note(cp: Checkpoint, key: Ed25519PublicKey, origin: str = NOTE_ORIGIN) -> bool:
    """True when the checkpoint's signed note is ``key``'s signature over its tree head."""
    if cp.tree_size is None or cp.root_hash is None or cp.note_signature is None:
        return False
    try:
        raw = base64.b64decode(cp.note_signature, validate=True)
        body = note_body(origin, cp.tree_size, cp.root_hash)
        if len(raw) != 68 or raw[:4] != note_key_hash(origin, key):
            return False
        key.verify(raw[4:], body.encode())
    except (ValueError, InvalidSignature):
        return False
    return True


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


def verify_link_signature(
    message: bytes, signature: str, key_id: str, public_keys: Mapping[str, Ed25519PublicKey]
) -> bool:
    """True when ``signature`` (from ``CheckpointSigner.sign_link``) is key ``key_id``'s."""
    key = public_keys.get(key_id)
    if key is None or not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
        return False
    try:
        key.verify(base64.urlsafe_b64decode(signature + "=="), message)
    except (ValueError, InvalidSignature):
        return False
    return True


def load_public_key_pem(path: Path) -> str:
    """The public half of the key file at ``path``, as PEM; reads only (never creates it)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read audit checkpoint key {path}: {exc}") from exc
    return CheckpointSigner(_parse_private_key(data, path)).public_key_pem()


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
