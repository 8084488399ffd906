"""What the ``tapevault`` commands share on their command line: which settings each offers as
flags, the ``--tenant`` option, and asking before an action that cannot be undone."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from tapevault.config import SETTINGS_DOC
from tapevault.errors import TapevaultError

AddSettings = Callable[[argparse.ArgumentParser], None]

# The settings each kind of command uses; the others would change nothing there, so they are
# not offered as flags (a TAPEVAULT_* variable still applies). Where the data is: the database,
# and the key that signs the access log's checkpoints (a command that writes access records
# signs one when it closes, and must use the servers' key and journal).
DATABASE = ("data_dir", "database_url")  # migrate: the schema only
DATA = (*DATABASE, "audit_key_file", "audit_checkpoint_log")
STORAGE = (*DATA, "storage_url", "storage_endpoint")  # commands that use the audio store
ERASING = STORAGE  # commands that remove audio
URLS = (*DATA, "public_url")  # commands that print URLs
AUDIT_READ = DATA  # audit verify/export: the log, its key and its journal
WORKER = (
    *ERASING,
    "audit",
    "audit_checkpoint_seconds",
    "audit_integrate_ms",
    "audit_retention",
    "purge_interval",
    "job_lease",
    "webhook_allow_private",
    "webhook_retry_schedule",
    "webhook_timeout",
)


def server_settings() -> tuple[str, ...]:
    """Every setting: ``serve`` uses them all."""
    return tuple(SETTINGS_DOC)


# Flags that keep working under an older name, shown nowhere.
ALIASES = {"--partner": "--tenant"}


class NotConfirmed(TapevaultError):
    """An irreversible action was neither confirmed at a terminal nor given ``--yes``."""


def settings_adder(names: Sequence[str]) -> AddSettings:
    """Adds the flags of the settings ``names`` to a parser, as one group of its --help."""

    def add(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("settings (a flag wins over its TAPEVAULT_* variable)")
        for name in names:
            env, description = SETTINGS_DOC[name]
            group.add_argument(
                "--" + name.replace("_", "-"),
                dest=name,
                default=None,
                metavar=name.rsplit("_", 1)[-1].upper(),
                help=f"{description} [{env}]",
            )

    return add


def add_tenant(parser: argparse.ArgumentParser, *, required: bool = True, help: str = "") -> None:
    """``--tenant ID`` (the tenant's id, which Suki calls ``partner_id``); ``--partner`` is read
    as ``--tenant`` by :func:`canonical_argv`."""
    parser.add_argument(
        "--tenant", required=required, metavar="ID", help=help or "the tenant's id (partner_id)"
    )


def canonical_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with old flag names (``--partner X``, ``--partner=X``) replaced by today's, up to
    a ``--`` (after which everything is a value)."""
    out: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            out.extend(argv[index:])
            break
        name, equals, value = arg.partition("=")
        out.append(ALIASES[name] + equals + value if name in ALIASES else arg)
    return out


def confirm(question: str, *, yes: bool, stdin: TextIO | None = None) -> bool:
    """Whether to go ahead with an action that cannot be undone: ``--yes`` given, or the person
    at the terminal answered y. Without a terminal (a script, a pipe) and without ``--yes`` it
    raises ``NotConfirmed``: a script that forgot ``--yes`` must not erase anything, nor hang."""
    if yes:
        return True
    stdin = stdin or sys.stdin
    if stdin is None or not stdin.isatty():
        raise NotConfirmed(
            "refusing to erase without confirmation: pass --yes (no terminal to ask at)"
        )
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = stdin.readline()
    except KeyboardInterrupt:  # Ctrl-C at the question is a no, not a traceback
        print(file=sys.stderr)
        return False
    return answer.strip().lower() in ("y", "yes")
