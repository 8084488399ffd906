"""The ``tapevault`` command: serve, demo, migrate, tenants, tokens and signing keys.

Every subcommand takes the same settings flags (``--data-dir``, ``--database-url``...), each
backed by its ``TAPEVAULT_*`` variable; see ``tapevault.config.SETTINGS_DOC``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from tapevault import __version__
from tapevault.auth.suki import issue_token
from tapevault.config import SETTINGS_DOC, Settings
from tapevault.core import policy
from tapevault.core.model import Partner
from tapevault.errors import ConfigError, TapevaultError
from tapevault.runtime import Runtime, open_runtime

log = logging.getLogger("tapevault")


def _add_settings(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (flags override TAPEVAULT_* variables)")
    for name, (env, description) in SETTINGS_DOC.items():
        group.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, help=f"{description} [{env}]"
        )


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load({name: getattr(args, name, None) for name in SETTINGS_DOC})


def _runtime(args: argparse.Namespace) -> Runtime:
    return open_runtime(_settings(args))


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# --- commands ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    runtime = _runtime(args)
    settings = runtime.settings
    log.info(
        "tapevault %s serving on %s (public URL %s)",
        __version__,
        settings.port,
        settings.public_url,
    )
    uvicorn.run(
        runtime.asgi(background=True),
        host=settings.host,
        port=settings.port,
        http="httptools",
        loop="uvloop",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="on",
        access_log=False,
        server_header=False,
        log_level=args.log_level,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run finalization jobs in the foreground (for servers started with TAPEVAULT_WORKERS=0)."""
    runtime = _runtime(args)
    runtime.recover()
    if args.once:
        print(f"ran {runtime.worker.run_until_idle()} job(s)")
    else:
        log.info("tapevault worker %s waiting for jobs", runtime.worker.owner)
        with contextlib.suppress(KeyboardInterrupt):
            runtime.worker.run_forever()
    runtime.close()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from tapevault.db.engine import make_engine, migrate

    settings = _settings(args)
    settings.ensure_data_dir()
    engine = make_engine(settings.database_url)
    revision = migrate(engine)
    engine.dispose()
    print(f"database at revision {revision}")
    return 0


def cmd_tenant_create(args: argparse.Namespace) -> int:
    retention = policy.parse_duration(args.retention)
    runtime = _runtime(args)
    partner = runtime.vault.create_partner(args.name, retention)
    data = {
        "name": partner.name,
        "partner_id": partner.partner_id,
        "jwt_secret": partner.jwt_secret,
        "retention_seconds": partner.retention_seconds,
    }
    if args.json:
        _print_json(data)
    else:
        for key, value in data.items():
            print(f"{key}: {value}")
    runtime.close()
    return 0


def _partner(args: argparse.Namespace) -> tuple[Runtime, Partner]:
    """The runtime (closed again) and the partner named by ``--partner``."""
    runtime = _runtime(args)
    partner = runtime.vault.repo.get_partner(args.partner)
    runtime.close()
    if partner is None:
        raise TapevaultError(f"no partner with id {args.partner!r}")
    return runtime, partner


def cmd_token_issue(args: argparse.Namespace) -> int:
    ttl = policy.parse_duration(args.ttl)
    runtime, partner = _partner(args)
    print(
        issue_token(
            partner, now=runtime.vault.clock.now(), ttl_seconds=ttl, provider_id=args.provider_id
        )
    )
    return 0


def cmd_twilio_url(args: argparse.Namespace) -> int:
    """Print a signed Twilio Media Streams URL for a partner (for a static TwiML <Stream>)."""
    from tapevault.http.twilio import sign_stream_url

    ttl = policy.parse_duration(args.ttl)
    runtime, partner = _partner(args)
    base = runtime.settings.public_url.replace("https://", "wss://", 1).replace(
        "http://", "ws://", 1
    )
    expires = int(runtime.vault.clock.now()) + ttl
    print(f"{base}/twilio/media-stream?{sign_stream_url(partner, expires)}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    runtime = _runtime(args)
    vault = runtime.vault
    if args.keys_command == "rotate":
        print(f"new signing key {vault.rotate_signing_key()} (older keys still verify)")
    elif args.keys_command == "remove":
        if not vault.remove_signing_key(args.key_id):
            raise TapevaultError(f"no signing key {args.key_id!r}")
        print(f"removed {args.key_id}; URLs it signed no longer verify")
    else:
        for index, key_id in enumerate(vault.signing_key_ids()):
            print(f"{key_id}{'  (signing)' if index == 0 else ''}")
    runtime.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tapevault.demo import run_demo

    return run_demo(_settings(args), serve=not args.no_serve, log_level=args.log_level)


# --- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tapevault", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tapevault {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, **kwargs)
        _add_settings(sub)
        sub.add_argument(
            "--log-level", default="info", choices=["debug", "info", "warning", "error"]
        )
        return sub

    command("serve", "run the HTTP server").set_defaults(func=cmd_serve)
    command("migrate", "apply database migrations").set_defaults(func=cmd_migrate)
    worker = command("worker", "run background finalization jobs")
    worker.add_argument("--once", action="store_true", help="run due jobs, then exit")
    worker.set_defaults(func=cmd_worker)
    demo = command("demo", "start with a demo partner and a generated conversation")
    demo.add_argument("--no-serve", action="store_true", help="set up and print, then exit")
    demo.set_defaults(func=cmd_demo)

    tenant = commands.add_parser("tenant", help="manage tenants (partners)")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True)
    create = tenant_commands.add_parser("create", help="create a partner and print its secret")
    _add_settings(create)
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.add_argument("--retention", default="7d", help="keep recordings this long (30s, 7d)")
    create.set_defaults(func=cmd_tenant_create)

    token = commands.add_parser("token", help="issue sdp_suki_token JWTs")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    issue = token_commands.add_parser("issue", help="print a token signed with the partner secret")
    _add_settings(issue)
    issue.add_argument("--partner", required=True, help="partner_id")
    issue.add_argument("--provider-id", default=None)
    issue.add_argument("--ttl", default="1h", help="lifetime (s/m/h/d), default 1h")
    issue.set_defaults(func=cmd_token_issue)

    twilio = commands.add_parser("twilio", help="Twilio Media Streams helpers")
    twilio_commands = twilio.add_subparsers(dest="twilio_command", required=True)
    twilio_url = twilio_commands.add_parser("url", help="print a signed <Stream> URL")
    _add_settings(twilio_url)
    twilio_url.add_argument("--partner", required=True, help="partner_id")
    twilio_url.add_argument("--ttl", default="365d", help="validity (s/m/h/d), default 365d")
    twilio_url.set_defaults(func=cmd_twilio_url)

    keys = commands.add_parser("keys", help="media URL signing keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    for name, help_text in (("list", "list keys"), ("rotate", "add a new signing key")):
        sub = keys_commands.add_parser(name, help=help_text)
        _add_settings(sub)
        sub.set_defaults(func=cmd_keys)
    remove = keys_commands.add_parser("remove", help="remove a key; its URLs stop verifying")
    _add_settings(remove)
    remove.add_argument("key_id")
    remove.set_defaults(func=cmd_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "info")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"tapevault: invalid setting {exc.message}", file=sys.stderr)
        return 2
    except TapevaultError as exc:
        print(f"tapevault: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
