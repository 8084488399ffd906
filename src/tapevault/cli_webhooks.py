"""``tapevault webhooks``: a tenant's webhook endpoints, as the native API manages them.

tapevault webhooks add --tenant T URL [--events recording.available,...] [--description D]
tapevault webhooks list|show|delete|rotate|deliveries|replay --tenant T [ID [DELIVERY]]

The same checks as the API (core/webhooks.py, and the SSRF policy of
``TAPEVAULT_WEBHOOK_ALLOW_PRIVATE``), and ``--json`` prints exactly the API's body. The secret
is printed by ``add`` and ``rotate`` only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from tapevault.cli_options import AddSettings, add_tenant
from tapevault.core.webhooks import parse_registration
from tapevault.errors import InvalidRequest, TapevaultError
from tapevault.http.webhooks import MAX_PAGE, delivery_body, endpoint_body

OpenTenant = Callable[[argparse.Namespace], Any]  # cli._tenant: (runtime, tenant) context


def register(commands: Any, add_settings: AddSettings, open_tenant: OpenTenant) -> None:
    """Add ``webhooks add|list|show|delete|rotate|deliveries|replay`` to the parser."""

    def run(args: argparse.Namespace) -> int:
        with open_tenant(args) as (runtime, tenant):
            service = runtime.context.webhooks
            partner = tenant.partner_id
            command = args.webhooks_command
            body: Any
            if command == "add":
                fields: dict[str, Any] = {"url": args.url}
                if args.events:
                    fields["events"] = [e.strip() for e in args.events.split(",") if e.strip()]
                if args.description is not None:
                    fields["description"] = args.description
                body = endpoint_body(
                    service.register(partner, parse_registration(fields)), secret=True
                )
            elif command == "list":
                body = {
                    "webhooks": [endpoint_body(e) for e in service.store.list_endpoints(partner)]
                }
            elif command == "show":
                body = endpoint_body(service.get(partner, args.id))
            elif command == "delete":
                service.remove(partner, args.id)
                body = {"deleted": args.id}
            elif command == "rotate":
                body = endpoint_body(service.rotate(partner, args.id), secret=True)
            elif command == "deliveries":
                if not 1 <= args.limit <= MAX_PAGE:
                    raise TapevaultError(f"--limit must be from 1 to {MAX_PAGE}")
                found = service.deliveries(partner, args.id, args.limit, args.cursor)
                body = {
                    "deliveries": [delivery_body(d) for d in found],
                    "next_cursor": found[-1].delivery_id if len(found) == args.limit else None,
                }
            else:  # replay
                body = delivery_body(service.replay(partner, args.id, args.delivery))
        if args.json or command in ("add", "rotate", "show"):
            print(json.dumps(body, indent=2))
        else:
            _print(command, body)
        return 0

    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except InvalidRequest as exc:
            raise TapevaultError(exc.message) from None

    group = commands.add_parser("webhooks", help="a tenant's webhook endpoints")
    subs = group.add_subparsers(dest="webhooks_command", required=True, metavar="COMMAND")

    def sub(name: str, help_text: str, *ids: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subs.add_parser(
            name, help=help_text, description=help_text
        )
        add_settings(parser)
        add_tenant(parser)
        for name_ in ids:
            parser.add_argument(name_, help=f"the {name_}'s id")
        parser.add_argument("--json", action="store_true", help="print the API's JSON")
        parser.set_defaults(func=guarded)
        return parser

    add = sub("add", "register an endpoint and print its secret (only this once)")
    add.add_argument("url", help="the receiver's http(s) URL")
    add.add_argument("--events", help="comma-separated event types (default: all)")
    add.add_argument("--description", help="a label for people")
    sub("list", "the tenant's endpoints (never their secrets)")
    sub("show", "one endpoint", "id")
    sub("delete", "remove an endpoint and its delivery log", "id")
    sub("rotate", "a new secret; the previous one keeps signing for 24 hours", "id")
    log = sub("deliveries", "an endpoint's delivery log, newest first", "id")
    log.add_argument("--limit", type=int, default=50, help=f"deliveries to print (1-{MAX_PAGE})")
    log.add_argument("--cursor", help="continue after this delivery (as printed)")
    replay = sub("replay", "send a delivery's event to its endpoint again", "id")
    replay.add_argument("delivery", help="the delivery's id, as `deliveries` prints it")


def _print(command: str, body: dict[str, Any]) -> None:
    if command == "list":
        for e in body["webhooks"]:
            state = "enabled" if e["enabled"] else f"disabled ({e['disabled_reason']})"
            print(f"{e['id']}  {e['url']}  {','.join(e['events'])}  {state}")
    elif command == "deliveries":
        for d in body["deliveries"]:
            print(
                f"{d['id']}  {d['event_type']}  {d['status']}  attempts={d['attempts']}  "
                f"last={d['last_status'] or d['last_error'] or '-'}"
            )
        if body["next_cursor"]:
            print(f"more: add --cursor {body['next_cursor']}")
    elif command == "replay":
        print(f"replaying as {body['id']}")
    else:
        print(f"deleted {body['deleted']}")
