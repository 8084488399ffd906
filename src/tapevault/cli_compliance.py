"""``tapevault`` commands for compliance: holds, retention, deletion, and the access log.

tapevault hold set --tenant T --session S --reason "litigation 2026-17" [--by "J. Doe"]
tapevault hold clear --tenant T --session S
tapevault retention set --tenant T (--session S | --recording R) 30d|default
tapevault delete --tenant T (--session S | --recording R) [--yes]   (asks first at a terminal)
tapevault purge                       remove audio past retention now (the worker does it too)
tapevault audit verify [--public-key FILE]... [--no-database-keys] [--checkpoints FILE]...
tapevault audit export --format jsonl|csv [--tenant T] [--since T] [--until T] [--output F]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import getpass
import io
import json
import os
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from tapevault.checkpointlog import read_text_lines
from tapevault.cli_options import AUDIT_READ, AddSettings, add_tenant, confirm, settings_adder
from tapevault.config import SETTINGS_DOC, Settings
from tapevault.core import merkle, policy
from tapevault.core.access import Actor
from tapevault.core.audit import AuditRecord
from tapevault.core.auditlog import Query
from tapevault.core.auditverify import Finding, verify
from tapevault.core.checkpoints import (
    Checkpoint,
    load_public_key_pem,
    load_public_keys,
    parse_vkey,
    verify_note,
)
from tapevault.core.journal import CheckpointMerge, JournalReader
from tapevault.core.signerkeys import MAX_LISTED, GivenKey, KeyTrust, decide, summary
from tapevault.db.auditstore import SqlAuditStore
from tapevault.db.engine import head_revision, make_read_only_engine
from tapevault.errors import TapevaultError
from tapevault.http.admin import parse_time
from tapevault.http.native import record_body
from tapevault.runtime import Runtime

OpenTenant = Callable[[argparse.Namespace], Any]  # cli._tenant: (runtime, tenant) context
Open = Callable[[argparse.Namespace], Runtime]

EXPORT_PAGE = 5000
CSV_COLUMNS = (
    "seq",
    "at",
    "action",
    "status",
    "tenant_id",
    "actor_kind",
    "actor_id",
    "provider_id",
    "session_id",
    "recording_id",
    "mode",
    "ranges",
    "bytes_sent",
    "error",
    "client_ip",
    "user_agent",
    "request_id",
    "detail",
    "prev_hash",
    "hash",
)


def cli_actor() -> Actor:
    """The operator at the console: their login and host, as the log's actor."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(kind="cli", token_id=f"{user}@{socket.gethostname()}"[:200])


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def register(
    commands: Any,
    add_settings: AddSettings,
    add_erasing_settings: AddSettings,
    open_tenant: OpenTenant,
    open_runtime: Open,
) -> None:
    """Add the compliance commands to the ``tapevault`` parser; ``add_erasing_settings`` adds
    the settings of commands that remove audio (they need the storage's too)."""

    def sub(
        parent: Any,
        name: str,
        help_text: str,
        func: Callable[[argparse.Namespace], int],
        settings: AddSettings = add_settings,
    ) -> Any:
        parser = parent.add_parser(name, help=help_text, description=help_text)
        settings(parser)
        parser.set_defaults(func=func)
        return parser

    def target(parser: argparse.ArgumentParser, recording: bool = True) -> None:
        add_tenant(parser)
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--session", help="session id (or a call's SID)")
        if recording:
            group.add_argument("--recording", help="recording id")

    def hold_set(args: argparse.Namespace) -> int:
        with open_tenant(args) as (runtime, tenant):
            session = runtime.context.retention.hold(
                tenant, args.session, reason=args.reason, by=args.by, actor=cli_actor()
            )
        print(f"session {session.session_id} is on legal hold: {session.hold_reason}")
        return 0

    def hold_clear(args: argparse.Namespace) -> int:
        with open_tenant(args) as (runtime, tenant):
            session = runtime.context.retention.release(tenant, args.session, cli_actor())
        print(f"hold lifted on {session.session_id}; retention applies again")
        return 0

    def retention_set(args: argparse.Namespace) -> int:
        seconds = None if args.duration == "default" else policy.parse_duration(args.duration)
        with open_tenant(args) as (runtime, tenant):
            retention = runtime.context.retention
            if args.session:
                retention.set_session_retention(tenant, args.session, seconds, cli_actor())
            else:
                r = retention.set_recording_retention(tenant, args.recording, seconds, cli_actor())
                print(f"recording {r.recording_id} expires at {r.expires_ms // 1000}")
        print("retention set" if seconds else "override removed")
        return 0

    def delete(args: argparse.Namespace) -> int:
        with open_tenant(args) as (runtime, tenant):
            retention = runtime.context.retention
            if args.session:
                erased = retention.delete_session(tenant, args.session, cli_actor())
            else:
                erased = [retention.delete_recording(tenant, args.recording, cli_actor())]
        for r in erased:
            print(f"deleted the audio of recording {r.recording_id}")
        return 0

    def purge(args: argparse.Namespace) -> int:
        runtime = open_runtime(args)
        try:
            total = 0
            while count := runtime.context.retention.purge_due():
                total += count
        finally:
            runtime.close()
        print(f"purged the audio of {total} recording(s) past retention")
        return 0

    # The two read-only commands open the database read-only and touch nothing else in the
    # data directory: no migration, no key file, no access record of their own, no checkpoint.
    # They work on a read-only copy (an archive, a snapshot, a witness's copy).

    def audit_verify(args: argparse.Namespace) -> int:
        settings = _settings(args)
        with _read_only_store(settings) as store:
            return _verify(
                settings,
                store,
                args.public_key or [],
                args.checkpoints or [],
                use_database=not (args.public_key or args.no_database_keys),
            )

    def audit_export(args: argparse.Namespace) -> int:
        with _read_only_store(_settings(args)) as store:
            try:
                out = open(args.output, "w", newline="") if args.output else sys.stdout  # noqa: SIM115
            except OSError as exc:
                raise TapevaultError(f"cannot write {args.output}: {exc}") from exc
            try:
                count = _export(store, args, out)
            except BrokenPipeError:
                # The reader went away (`| head`): stop quietly, as other Unix tools do.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 1
            finally:
                if args.output:
                    out.close()
        print(f"exported {count} record(s)", file=sys.stderr)
        return 0

    hold = commands.add_parser("hold", help="legal holds on sessions")
    holds = hold.add_subparsers(dest="hold_command", required=True)
    setting = sub(holds, "set", "put a session on legal hold", hold_set)
    target(setting, recording=False)
    setting.add_argument("--reason", required=True, help="why, as the log should record it")
    setting.add_argument("--by", default=None, help="who orders the hold (default: you)")
    target(sub(holds, "clear", "lift a legal hold", hold_clear), recording=False)

    retention = commands.add_parser("retention", help="retention overrides")
    retentions = retention.add_subparsers(dest="retention_command", required=True)
    change = sub(retentions, "set", "override retention of a session or recording", retention_set)
    target(change)
    change.add_argument("duration", help="30d, 12h, 6y... or 'default' to remove the override")

    erase = sub(
        commands,
        "delete",
        "erase the audio of a session or recording now (asks first)",
        _confirmed(delete),
        add_erasing_settings,
    )
    target(erase)
    erase.add_argument(
        "--yes", action="store_true", help="do not ask (required without a terminal)"
    )
    sub(commands, "purge", "remove audio past retention now", purge, add_erasing_settings)

    audit = commands.add_parser("audit", help="the tamper-evident access log")
    audits = audit.add_subparsers(dest="audit_command", required=True)
    reading = settings_adder(AUDIT_READ)
    check = sub(
        audits, "verify", "check the hash chain and signed checkpoints", audit_verify, reading
    )
    check.add_argument(
        "--public-key",
        action="append",
        metavar="FILE",
        help="pin a checkpoint key (a PEM public key, or signed-note verifier keys one a line), "
        "besides the local key file; once any is pinned, keys the database lists are not "
        "trusted; repeatable",
    )
    check.add_argument(
        "--no-database-keys",
        action="store_true",
        help="trust only the local key file and pinned keys, not the keys the database lists "
        "(implied by --public-key)",
    )
    check.add_argument(
        "--checkpoints",
        action="append",
        metavar="FILE",
        help="a copy of checkpoint lines kept elsewhere (a witness's copy of the journal, or "
        "the process log); compared like the local journal; repeatable",
    )
    export = sub(
        audits, "export", "write access records as JSON lines or CSV", audit_export, reading
    )
    export.add_argument(
        "--format", choices=["jsonl", "csv"], default="jsonl", help="default: jsonl"
    )
    add_tenant(export, required=False, help="only this tenant's records (default: all)")
    export.add_argument("--since", default=None, help="ISO-8601 or Unix seconds")
    export.add_argument("--until", default=None, help="ISO-8601 or Unix seconds")
    export.add_argument("--output", default=None, help="file (default: standard output)")


def _confirmed(
    delete: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """``delete``, run only once confirmed: erasing audio cannot be undone."""

    def confirmed(args: argparse.Namespace) -> int:
        what = f"session {args.session}" if args.session else f"recording {args.recording}"
        question = f"Erase the audio of {what} of tenant {args.tenant} now? This cannot be undone."
        if not confirm(question, yes=args.yes):
            print("nothing erased", file=sys.stderr)
            return 1
        return delete(args)

    return confirmed


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load({name: getattr(args, name, None) for name in SETTINGS_DOC})


@contextlib.contextmanager
def _read_only_store(settings: Settings) -> Iterator[SqlAuditStore]:
    """The access log's tables over a connection that cannot write (see make_read_only_engine),
    refused with a message unless the schema is this version's (migrating would write)."""
    try:
        engine = make_read_only_engine(settings.database_url)
    except OSError as exc:
        raise TapevaultError(f"cannot open the database: {exc}") from exc
    try:
        _require_current_schema(engine)
        yield SqlAuditStore(engine)
    except SQLAlchemyError as exc:
        raise TapevaultError(f"cannot read the access log: {type(exc).__name__}: {exc}") from exc
    finally:
        engine.dispose()


def _require_current_schema(engine: Engine) -> None:
    # Read alembic_version directly: Alembic's MigrationContext would log INFO lines.
    try:
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        revision = None
    if revision is None:
        raise TapevaultError("the database holds no tapevault schema")
    if revision != head_revision():
        raise TapevaultError(
            f"the database schema is at revision {revision}, this tapevault reads "
            f"{head_revision()}: run `tapevault migrate` on it (or a writable copy) first"
        )


def _journal(path: Path, keys: dict[str, Any], *, linked: bool) -> JournalReader:
    if not path.is_file():
        raise TapevaultError(f"cannot read checkpoints from {path}: not a file")
    return JournalReader(read_text_lines(path), keys, linked=linked)


def _pinned(path: str) -> list[GivenKey]:
    """The keys of a ``--public-key`` file: PEM public keys, or verifier keys one a line."""
    try:
        content = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TapevaultError(f"cannot read --public-key {path}: {exc}") from exc
    source = f"pinned with --public-key {path}"
    try:
        if "-----BEGIN" in content:
            return [GivenKey(key, source) for key in load_public_keys([content]).values()]
        lines = [line.strip() for line in content.splitlines()]
        keys = [parse_vkey(line) for line in lines if line and not line.startswith("#")]
    except ValueError as exc:
        raise TapevaultError(f"--public-key {path}: {exc}") from exc
    if not keys:
        raise TapevaultError(f"--public-key {path} holds no key")
    return [GivenKey(key, source) for key in keys]


def _trust(
    settings: Settings, store: SqlAuditStore, extra_keys: list[str], *, use_database: bool
) -> KeyTrust:
    """The keys to verify with: the local key file, pinned keys and (``use_database``) the keys
    the database lists; see core/signerkeys.py for why the last are only a convenience."""
    given = [key for path in extra_keys for key in _pinned(path)]
    key_file = settings.audit_key_path
    if key_file.is_file():
        try:
            pem = load_public_key_pem(key_file)
        except ValueError as exc:
            raise TapevaultError(str(exc)) from exc
        (local,) = load_public_keys([pem]).values()
        given.append(GivenKey(local, f"this node's key file {key_file}"))
    trust = decide(given, store.signers(MAX_LISTED), use_database=use_database)
    if not trust.trusted:
        raise TapevaultError(f"no checkpoint key: {key_file} is missing; pass --public-key FILE")
    if not given:
        print(
            f"note: no key file at {key_file} and no key pinned: every key trusted comes from "
            f"the database"
        )
    return trust


def _counted(
    checkpoints: Iterable[Checkpoint], signed: Counter[str], highest: dict[str, int]
) -> Iterator[Checkpoint]:
    """``checkpoints``, counting on the way how many each key signed, and the largest."""
    for cp in checkpoints:
        signed[cp.key_id] += 1
        highest[cp.key_id] = max(highest.get(cp.key_id, 0), cp.size)
        yield cp


def _verify(
    settings: Settings,
    store: SqlAuditStore,
    extra_keys: list[str],
    copies: list[str],
    *,
    use_database: bool = True,
) -> int:
    """Check the whole log against its checkpoints, those of the journal and of any copy;
    exit status 0 when clean, 1 with the first bad record named. Says which keys it trusted,
    and from where."""
    trust = _trust(settings, store, extra_keys, use_database=use_database)
    keys = trust.trusted
    journal_path = settings.audit_checkpoint_log_path
    reads: list[tuple[str, JournalReader]] = []
    if journal_path.is_file():
        reads.append((f"journal {journal_path}", _journal(journal_path, keys, linked=True)))
    else:
        print(f"note: no checkpoint journal at {journal_path}: only the database's checkpoints")
    reads += [(f"copy {path}", _journal(Path(path), keys, linked=False)) for path in copies]
    state = store.state()
    checkpoints = CheckpointMerge(store.iter_checkpoints(), [r for _, r in reads], state.first_seq)
    signed: Counter[str] = Counter()
    highest: dict[str, int] = {}
    tree = TreeCheck(store, keys)
    try:
        report = verify(
            store.records_to_verify(),
            _counted(checkpoints, signed, highest),
            keys,
            first_prev_hash=state.first_prev_hash,
            first_seq=state.first_seq,
            untrusted=trust.untrusted,
            on_record=tree.record,
        )
    except OSError as exc:  # a journal or copy that fails while it is read
        raise TapevaultError(f"cannot read the checkpoints: {exc}") from exc
    findings = list(report.findings)
    if report.ok and (report.head_seq or 0) != state.head_seq and state.head_seq:
        findings.append(_head_mismatch(report.head_seq or state.first_seq - 1, state.head_seq))
    problems = [f"{name}: {problem}" for name, read in reads for problem in read.problems]
    problems += tree.problems
    waiting, _ = store.waiting()
    if waiting:
        print(
            f"note: {waiting} record(s) are durable but not yet integrated (a server's "
            f"integrator adds them within TAPEVAULT_AUDIT_INTEGRATE_MS): not checked yet"
        )
    if tree.checked:
        print(f"Merkle tree: {tree.checked} signed root(s) match the records")
    problems += [f"{name}: {read.more_problems} more" for name, read in reads if read.more_problems]
    print(
        f"{report.records} record(s) from seq {state.first_seq}, "
        f"{report.checkpoints} checkpoint(s), head {report.head_seq} {report.head_hash}"
    )
    for name, read in reads:
        print(f"{name}: {read.lines} checkpoint line(s)")
        for note in read.notes:
            print(f"note: {name}: {note}")
    lines, notes = summary(trust, signed, highest, use_database=use_database)
    print(f"checkpoint keys ({len(keys)} trusted):")
    for line in lines:
        print(f"  {line}")
    for note in notes:
        print(f"note: {note}")
    deleted = checkpoints.deleted
    if not (findings or deleted or problems or trust.problems):
        print("the access log verifies: no record was modified, removed, inserted or reordered")
        return 0
    if findings:
        first = findings[0]
        print(f"FIRST BAD RECORD: {first.seq} ({first.kind}): {first.message}")
        for finding in findings[1:]:
            print(f"  then record {finding.seq} ({finding.kind}): {finding.message}")
    for finding in deleted:
        print(f"CHECKPOINT ROW: {finding.message}")
    if checkpoints.more_deleted:
        print(f"CHECKPOINT ROW: {checkpoints.more_deleted} more were deleted")
    for problem in problems:
        print(f"CHECKPOINT JOURNAL: {problem}")
    for problem in trust.problems:
        print(f"SIGNER ROW: {problem}")
    if trust.more_problems:
        print(f"SIGNER ROW: {trust.more_problems} more")
    return 1


class TreeCheck:
    """Recompute the RFC 9162 root over the records as ``verify`` streams them (O(log n)
    memory) and compare it with every signed tree note: a root that does not match the records
    it claims to cover, or a note whose signature fails, is a problem."""

    def __init__(self, store: SqlAuditStore, keys: dict[str, Any]) -> None:
        tree = store.tree_state()
        self.first = tree.tree_first_seq
        self.active = tree.tree_first_seq == tree.first_seq  # a pruned start cannot be rebuilt
        self.notes = (cp for cp in store.iter_checkpoints() if cp.note_signature is not None)
        self.keys = keys
        self.checked = 0
        self.problems: list[str] = []
        self.next_note = next(self.notes, None)
        self.appender = merkle.Frontier()

    def record(self, seq: int, data: bytes | None) -> None:
        """The next record's stored seq, in stored order, with its canonical bytes (``verify``'s
        ``on_record``: each record is encoded once for the chain and the tree; None: it cannot
        be encoded, so the tree over it cannot be rebuilt)."""
        appender = self.appender
        if not self.active or seq != self.first + appender.size:
            self.active = False  # a gap or a reorder: the chain check names it
            return
        if data is None:
            self.active = False
            return
        appender.append_data(data)
        note = self.next_note
        if note is not None and (note.tree_size or 0) <= appender.size:
            self._notes_through(appender)

    def _notes_through(self, appender: merkle.Frontier) -> None:
        while self.next_note is not None and (self.next_note.tree_size or 0) <= appender.size:
            self._check(self.next_note, appender)
            self.next_note = next(self.notes, None)

    def _check(self, cp: Checkpoint, appender: merkle.Frontier) -> None:
        if cp.tree_size != appender.size or len(self.problems) >= 20:
            return
        key = self.keys.get(cp.key_id)
        if key is None or not verify_note(cp, key):
            self.problems.append(f"checkpoint {cp.size}: its signed tree note does not verify")
        elif appender.root().hex() != cp.root_hash:
            self.problems.append(
                f"checkpoint {cp.size}: the Merkle root it signed is not the root of records "
                f"{self.first}..{self.first + cp.tree_size - 1}"
            )
        else:
            self.checked += 1


def _head_mismatch(found: int, expected: int) -> Finding:
    return Finding(
        found + 1,
        "removed",
        f"the log's head is record {expected}, but the records end at {found}: "
        f"records {found + 1}..{expected} were removed",
    )


def _records(store: SqlAuditStore, args: argparse.Namespace) -> Iterator[AuditRecord]:
    after = 0
    while True:
        page = store.query(
            Query(
                tenant_id=args.tenant,
                since_ms=parse_time("--since", args.since),
                until_ms=parse_time("--until", args.until),
                after_seq=after,
                limit=EXPORT_PAGE,
            )
        )
        yield from page
        if len(page) < EXPORT_PAGE:
            return
        after = page[-1].seq


def _export(store: SqlAuditStore, args: argparse.Namespace, out: io.TextIOBase | Any) -> int:
    count = 0
    writer = csv.writer(out) if args.format == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    for record in _records(store, args):
        body = record_body(record)
        if writer is None:
            out.write(json.dumps(body, separators=(",", ":")) + "\n")
        else:
            e = record.entry
            writer.writerow(
                [
                    record.seq,
                    body["at"],
                    e.action,
                    e.status,
                    e.tenant_id,
                    e.actor_kind,
                    e.actor_id,
                    e.provider_id,
                    e.session_id,
                    e.recording_id,
                    e.mode,
                    json.dumps(body["ranges"]),
                    e.bytes_sent,
                    e.error,
                    e.client_ip,
                    e.user_agent,
                    e.request_id,
                    json.dumps(e.detail) if e.detail is not None else "",
                    record.prev_hash,
                    record.hash,
                ]
            )
        count += 1
    return count
