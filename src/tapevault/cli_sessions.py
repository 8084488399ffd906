"""``tapevault sessions``: find a tenant's sessions and show one, as the native API does.

tapevault sessions list --tenant T [--status processing,failed] [--kind call] [--on-hold true]
                        [--created-after T] [--created-before T] [--expiring-before T]
                        [--external-id SID] [--provider-id ID] [--limit N] [--cursor C] [--json]
tapevault sessions show --tenant T SESSION [--json]

The filters are the API's (core/catalog.py parses both, so both refuse the same values), and
``--json`` prints exactly the API's body.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from tapevault.cli_options import AddSettings, add_tenant
from tapevault.core.catalog import FILTERS, page, parse_session_query
from tapevault.errors import InvalidRequest, TapevaultError
from tapevault.http.native import page_body, session_body

OpenTenant = Callable[[argparse.Namespace], Any]  # cli._tenant: (runtime, tenant) context
_WHEN = "ISO 8601 (UTC unless it says) or Unix seconds"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def register(commands: Any, add_settings: AddSettings, open_tenant: OpenTenant) -> None:
    """Add ``sessions list`` and ``sessions show`` to the ``tapevault`` parser."""

    def listing(args: argparse.Namespace) -> int:
        names = (*FILTERS, "cursor", "limit")
        pairs = [(n, str(getattr(args, n))) for n in names if getattr(args, n) is not None]
        with open_tenant(args) as (runtime, tenant):
            try:
                query = parse_session_query(tenant.partner_id, pairs)
            except InvalidRequest as exc:  # say it with the flag's name, not the parameter's
                message = exc.message
                for name in names:
                    message = message.replace(name, flag(name))
                raise TapevaultError(message) from None
            body = page_body(page(query, runtime.vault.sessions.find_sessions(query)))
        if args.json:
            print(json.dumps(body, indent=2))
            return 0
        rows = [
            (
                s["created_at"],
                s["session_id"],
                s["kind"],
                s["status"],
                str(s["recording_count"]),
                f"{s['duration_ms'] / 1000:.1f}s",
                "held" if s["hold"] else "",
                s["external_id"] or s["provider_id"] or "",
            )
            for s in body["sessions"]
        ]
        header = ("CREATED", "SESSION", "KIND", "STATUS", "RECS", "AUDIO", "HOLD", "CALL/PROVIDER")
        _table([header, *rows])
        if body["next_cursor"]:
            print(f"more: add --cursor {body['next_cursor']}", file=sys.stderr)
        return 0

    def show(args: argparse.Namespace) -> int:
        with open_tenant(args) as (runtime, tenant):
            session = runtime.context.retention.session(tenant, args.session)
            recordings = runtime.vault.sessions.list_recordings(
                tenant.partner_id, session.session_id
            )
            body = session_body(session, recordings, runtime.vault.links.with_peaks(recordings))
        if args.json:
            print(json.dumps(body, indent=2))
            return 0
        for key, value in body.items():
            if key != "recordings":
                print(f"{key}: {value}")
        print("recordings:")
        _table(
            [
                ("SEQ", "RECORDING", "STATUS", "CHANNEL", "AUDIO", "EXPIRES"),
                *(
                    (
                        str(r["sequence_number"]),
                        r["recording_id"],
                        r["status"],
                        r["channel"] or "",
                        f"{r['duration_ms'] / 1000:.1f}s",
                        r["expires_at"],
                    )
                    for r in body["recordings"]
                ),
            ]
        )
        return 0

    group = commands.add_parser("sessions", help="find sessions and show one")
    subs = group.add_subparsers(dest="sessions_command", required=True, metavar="COMMAND")
    find = subs.add_parser(
        "list",
        help="a tenant's sessions, newest first, filtered",
        description="A tenant's sessions, newest first, filtered as GET /api/v1/sessions is.",
    )
    add_settings(find)
    add_tenant(find)
    find.add_argument("--created-after", help=f"created at or after this time ({_WHEN})")
    find.add_argument("--created-before", help=f"created before this time ({_WHEN})")
    find.add_argument(
        "--status",
        help="created, in_progress, processing, completed or failed (several: comma separated)",
    )
    find.add_argument("--kind", help="ambient, form_filling or call (several: comma separated)")
    find.add_argument("--external-id", help="a call's SID")
    find.add_argument("--provider-id", help="Suki's provider id of the session's creator")
    find.add_argument("--on-hold", choices=["true", "false"], help="under legal hold, or not")
    find.add_argument(
        "--expiring-before",
        help=f"with a recording whose audio is kept and whose retention ends before ({_WHEN})",
    )
    find.add_argument("--limit", help="sessions to print (1-500, default 50)")
    find.add_argument("--cursor", help="continue after the previous page (as printed)")
    find.add_argument("--json", action="store_true", help="print the API's JSON")
    find.set_defaults(func=listing)
    one = subs.add_parser(
        "show",
        help="one session and its recordings",
        description="One session (by id, or a call's SID) with its hold and recordings.",
    )
    add_settings(one)
    add_tenant(one)
    one.add_argument("session", help="the session's id, or a call's SID")
    one.add_argument("--json", action="store_true", help="print the API's JSON")
    one.set_defaults(func=show)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
