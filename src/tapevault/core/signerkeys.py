"""Which checkpoint keys ``tapevault audit verify`` trusts, and from where.

Checkpoints are signed by whichever process holds the integrator's role, with its node's key, so
one log carries several keys over time (nodes with their own key files, a key rotated or lost on
a node). Transparency logs solve this by making every signer's verifier key known to whoever
verifies; tapevault lists each key in the database when it first signs (``audit_signers``).

But the database is what the checkpoints guard against: someone who can write it can list a key
of their own, rewrite the log and re-sign it. So keys come from two kinds of source, and the
report says which each trusted key came from:

- *independent*: the local key file and keys the operator pins (``--public-key``): they do not
  come from the database, so a rewrite of the database cannot forge a signature they accept;
- *the database*: a convenience, trusted only when nothing is pinned (and not at all with
  ``--no-database-keys``); a checkpoint signed by a key not trusted is a finding.

A listed row that does not hold together (its key id not its key's, a verifier key that does
not parse) was written by hand: a problem, and the key is not trusted.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tapevault.core.checkpoints import NOTE_ORIGIN, SignerRecord, key_id_of, note_vkey, parse_vkey


@dataclass(frozen=True, slots=True)
class GivenKey:
    """A key from a source that is not the database: the local key file, a pinned key."""

    key: Ed25519PublicKey
    source: str  # e.g. "this node's key file /data/audit-signing.pem", "--public-key b.pem"


@dataclass
class KeyTrust:
    """The keys to verify with, and what to tell the operator about each."""

    trusted: dict[str, Ed25519PublicKey]
    sources: dict[str, str]  # key id -> where it was trusted from (or why not)
    database_only: set[str]  # trusted only because the database lists them
    untrusted: dict[str, str]  # listed in the database but not trusted: key id -> why
    vkeys: dict[str, str]  # key id -> verifier key, for every key seen (to pin it)
    problems: list[str] = field(default_factory=list)  # rows that do not hold together
    more_problems: int = 0  # beyond MAX_PROBLEMS
    listed: set[str] = field(default_factory=set)  # trusted keys the database lists too

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.more_problems += 1


def _when(ms: int) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"at_ms {ms}"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def shown(value: object, limit: int = 80) -> str:
    """``value``'s repr for a report, cut to ``limit`` characters: a row written by hand may hold
    a megabyte where a key id or node name goes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def listing(row: SignerRecord) -> str:
    node = "an unnamed node" if not row.node else f"node {shown(row.node)}"
    return f"{node}, first signed {_when(row.first_ms)}"


MAX_LISTED = 1000  # a deployment has a handful of keys; more rows are a flood, not read
MAX_PROBLEMS = 20


def decide(
    given: Sequence[GivenKey],
    listed: Iterable[SignerRecord],
    *,
    use_database: bool,
) -> KeyTrust:
    """Trust every ``given`` key, and the database's listed keys when ``use_database``
    (the first ``MAX_LISTED``; more is a problem)."""
    trust = KeyTrust({}, {}, set(), {}, {})
    for item in given:
        key_id = key_id_of(item.key)
        trust.trusted[key_id] = item.key
        trust.vkeys[key_id] = note_vkey(NOTE_ORIGIN, item.key)
        earlier = trust.sources.get(key_id)
        trust.sources[key_id] = item.source if earlier is None else f"{earlier}; {item.source}"
    for number, row in enumerate(listed, start=1):
        if number > MAX_LISTED:
            trust.problems.insert(  # first, whatever else was found
                0,
                f"more than {MAX_LISTED} keys are listed as signers: the rows after the first "
                f"{MAX_LISTED} were not read (a deployment has a handful; they were added)",
            )
            break
        try:
            key = parse_vkey(row.vkey)
        except ValueError as exc:
            trust.problem(
                f"the row of key {shown(row.key_id)} does not hold a valid verifier key ({exc}): "
                f"it was written by hand; not trusted"
            )
            continue
        actual = key_id_of(key)
        if actual != row.key_id:
            trust.problem(
                f"the row of key {shown(row.key_id)} holds the verifier key of key {actual!r}: "
                f"it was altered; not trusted"
            )
            continue
        trust.vkeys.setdefault(actual, row.vkey)
        where = listing(row)
        if actual in trust.trusted:
            trust.sources[actual] += f"; also listed in the database ({where})"
            trust.listed.add(actual)
        elif use_database:
            trust.trusted[actual] = key
            trust.database_only.add(actual)
            trust.sources[actual] = f"the database only ({where})"
        else:
            trust.untrusted[actual] = f"the database lists it ({where}) but it is not pinned"
            trust.sources[actual] = f"NOT trusted: listed in the database ({where}), not pinned"
    return trust


def summary(
    trust: KeyTrust,
    signed: Mapping[str, int],
    highest: Mapping[str, int],
    *,
    use_database: bool,
) -> tuple[list[str], list[str]]:
    """(lines describing every key, notes) for the report. ``signed``: checkpoints per key id;
    ``highest``: the largest checkpoint size each key signed."""
    lines = []
    ids = list(trust.sources) + sorted(k for k in signed if k not in trust.sources)
    for key_id in ids:
        count = signed.get(key_id, 0)
        where = trust.sources.get(key_id, "NOT trusted: neither given nor listed in the database")
        if key_id in trust.trusted and key_id not in trust.database_only:
            where = f"trusted: {where}"
        elif key_id in trust.database_only:
            where = f"trusted from {where}"
        lines.append(f"key {key_id}: {where}; signed {count} checkpoint(s)")
        if key_id in trust.vkeys:
            lines.append(f"  verifier key {trust.vkeys[key_id]}")
    notes = []
    vouched = sum(signed.get(k, 0) for k in trust.database_only)
    if vouched:
        notes.append(
            f"{vouched} checkpoint(s) verified with keys trusted only because the database lists "
            f"them: whoever can write the database can list a key of their own and re-sign a "
            f"rewritten log. For a check that does not trust the database, pin every signer's "
            f"key (--public-key FILE: its PEM or the verifier key printed here, taken from the "
            f"node itself)"
        )
        independent = [
            highest[k] for k in trust.trusted if k not in trust.database_only and k in highest
        ]
        by_database = max(highest.get(k, 0) for k in trust.database_only)
        if not independent:
            notes.append(
                "no checkpoint was signed by a key trusted independently of the database: "
                "against someone who can write the database, this run proves nothing"
            )
        elif by_database > max(independent):
            notes.append(
                f"records after {max(independent)} are vouched for only by checkpoints signed "
                f"with keys from the database"
            )
    unlisted = [
        k
        for k in trust.trusted
        if k not in trust.database_only and k not in trust.listed and signed.get(k)
    ]
    for key_id in unlisted:
        notes.append(
            f"key {key_id} signed checkpoints but the database does not list it (it signed only "
            f"before migration 0022, or its row was deleted)"
        )
    if not use_database and not trust.trusted:
        notes.append("no key is trusted: every checkpoint will fail")
    return lines, notes
