"""The "no secret in any log" check: a registry of every secret the tests mint or are handed,
and a scanner of every log line and access record the run wrote.

The registry (``SECRETS``) is fed for the whole session (``conftest.py`` installs the feeds):

- where secrets are born in this process: every ``jwt.encode`` (Suki and Kore tokens, forged
  ones too), every ``secrets.token_urlsafe`` (API keys, tenant JWT and Kore client secrets,
  player-link secrets, stream tickets), every signed URL's signature
  (``tapevault.core.signing._mac``). Not tus upload ids, also drawn by ``token_urlsafe``:
  every tus request must carry its tenant's token and an upload is found only under its owner,
  so an upload id is a resource id like a session id, and it is logged like one;
- what a real server process minted and handed to the tests: ``tests.server`` registers the
  tokens and tenant credentials its CLI prints, and ``harvest`` registers the secret-looking
  fields and URL signatures of every JSON answer the tests' HTTP clients receive.

The sources (``Sources``): everything logged in this process (a root handler writes it to a
file), every real server's log (``<data_dir>.server.log``), and the access records of every
database the tests used (SQLite files found under the run's temporary directory, PostgreSQL
dumped before each test's database is reset, in-memory logs dumped at teardown).

A secret is matched by its longest run of URL-safe characters (at least ``MIN_LENGTH``), so it
is found inside a URL, a JSON string or a header however it is quoted around. The search is one
pass over the text with a dictionary of ``MIN_LENGTH``-character prefixes: seconds for the
whole suite's logs, whatever the number of secrets.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MIN_LENGTH = 16  # shorter random strings are ids (key ids, link ids), not secrets
_RUN = re.compile(rf"[A-Za-z0-9_-]{{{MIN_LENGTH},}}")
# JSON fields whose value is a credential (tenant create, API key create, tickets, links...).
_SECRET_FIELD = re.compile(r"(secret|token|ticket|api_?key|password|signature)$", re.IGNORECASE)
# The final test's name: conftest.py moves it to the end of the run.
FINAL_TEST = "test_no_secret_in_any_log_or_access_record"
ACCESS_TABLES = ("audit_log", "audit_pending")
_KEPT_MARK = "\n\x00--- "  # starts a section of the kept file (a NUL: never in a log line)


@dataclass(frozen=True)
class Leak:
    what: str  # how the secret was registered ("jwt", "signed URL signature"...)
    source: str  # where it was found (a file, a table)
    excerpt: str  # the text around it, with the secret itself masked


class Secrets:
    """Registered secrets, by their core (longest URL-safe run)."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, dict[str, str]] = {}
        self.count = 0

    def add(self, secret: object, what: str) -> None:
        if not isinstance(secret, str | bytes):
            return
        text = secret.decode("latin-1") if isinstance(secret, bytes) else secret
        runs = _RUN.findall(text)
        if not runs:
            return
        core = max(runs, key=len)
        bucket = self._by_prefix.setdefault(core[:MIN_LENGTH], {})
        if core not in bucket:
            bucket[core] = what
            self.count += 1

    def forget(self, value: str) -> None:
        """Take back a value registered as a secret that is only an id."""
        runs = _RUN.findall(value)
        if runs:
            core = max(runs, key=len)
            bucket = self._by_prefix.get(core[:MIN_LENGTH], {})
            if bucket.pop(core, None) is not None:
                self.count -= 1

    def __contains__(self, text: str) -> bool:
        return any(True for _ in self.find(text))

    def find(self, text: str) -> Iterator[tuple[int, str, str]]:
        """(offset, secret, what) of every registered secret in ``text``."""
        index = self._by_prefix
        for match in _RUN.finditer(text):
            run = match.group()
            for start in range(len(run) - MIN_LENGTH + 1):
                bucket = index.get(run[start : start + MIN_LENGTH])
                if bucket is None:
                    continue
                for core, what in bucket.items():
                    if run.startswith(core, start):
                        yield match.start() + start, core, what


def harvest(body: Any, secrets: Secrets, what: str = "handed out by a server") -> None:
    """Register the credentials in a JSON answer: fields named like one, and the signature
    (and ticket) of every URL in it."""
    if isinstance(body, Mapping):
        for key, value in body.items():
            if isinstance(value, str) and _SECRET_FIELD.search(str(key)):
                secrets.add(value, f"{key} {what}")
            else:
                harvest(value, secrets, what)
    elif isinstance(body, list):
        for item in body:
            harvest(item, secrets, what)
    elif isinstance(body, str) and ("?" in body or "#" in body) and len(body) < 8192:
        parts = urlsplit(body)
        for name, value in parse_qsl(parts.query):
            if name in ("s", "ticket", "sig", "signature", "token"):
                secrets.add(value, f"URL {name}= {what}")
        if parts.fragment and "://" in body:  # a player link's secret travels in the fragment
            secrets.add(parts.fragment, f"URL fragment {what}")


def scan(secrets: Secrets, source: str, text: str) -> list[Leak]:
    leaks = []
    for offset, core, what in secrets.find(text):
        before = text[max(0, offset - 80) : offset].rsplit("\n", 1)[-1]
        after = text[offset + len(core) : offset + len(core) + 40].split("\n", 1)[0]
        leaks.append(Leak(what, source, f"{before}<{what}: {core[:6]}…>{after}"))
    return leaks


@dataclass
class Sources:
    """Where the run's log lines and access records are."""

    process_log: Path  # this process's logging, written by a root handler
    kept: Path  # what would vanish before the end: in-memory and PostgreSQL access records,
    # the CLI's stderr
    server_logs: list[Path] = field(default_factory=list)
    databases_under: list[Path] = field(default_factory=list)  # searched for SQLite files

    def texts(self) -> Iterator[tuple[str, str]]:
        """(source name, text) of everything to scan."""
        for path in (self.process_log, *self.server_logs):
            if path.exists():
                yield str(path), path.read_text(errors="replace")
        if self.kept.exists():
            for section in self.kept.read_text(errors="replace").split(_KEPT_MARK)[1:]:
                title, _, text = section.partition("\n")
                yield title, text
        for root in self.databases_under:
            for database in sorted(root.rglob("*.db")):
                text = sqlite_access_records(database)
                if text:
                    yield f"{database} (access records)", text


def sqlite_access_records(path: Path) -> str:
    """Every access record in a SQLite database, one row a line ('' if it has none)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return ""
    try:
        return "\n".join(access_rows(db.execute, "SELECT name FROM sqlite_master"))
    except sqlite3.Error:
        return ""
    finally:
        db.close()


def access_rows(execute: Any, list_tables: str) -> Iterable[str]:
    """Every row of the access-log tables, through a DB-API-like ``execute``."""
    tables = {row[0] for row in execute(list_tables)}
    for table in ACCESS_TABLES:
        if table in tables:
            for row in execute(f"SELECT * FROM {table}"):  # noqa: S608 - fixed table names
                yield f"{table}: {tuple(row)!r}"


def report(leaks: list[Leak], secrets: Secrets, sources: int) -> str:
    shown = "\n".join(f"- {leak.source}: {leak.excerpt}" for leak in leaks[:40])
    more = f"\n… and {len(leaks) - 40} more" if len(leaks) > 40 else ""
    return (
        f"{len(leaks)} secret(s) found in the logs or access records of this run "
        f"({secrets.count} secrets registered, {sources} sources scanned):\n{shown}{more}"
    )


SECRETS = Secrets()
KEPT: Path | None = None  # set for the session by conftest.leak_watch


def keep(title: str, text: str) -> None:
    """Add text to what the final check scans (nothing outside a session)."""
    if KEPT is not None and text:
        with KEPT.open("a", encoding="utf-8") as f:
            f.write(f"{_KEPT_MARK}{title}\n{text}\n")
