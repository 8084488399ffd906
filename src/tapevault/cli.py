"""The ``tapevault`` command: serve, demo, migrate, tenants, tokens and signing keys.

Every subcommand takes the same settings flags (``--data-dir``, ``--database-url``...), each
backed by its ``TAPEVAULT_*`` variable; see ``tapevault.config.SETTINGS_DOC``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tapevault import __version__, cli_compliance
from tapevault.auth.kore import issue_kore_token
from tapevault.auth.suki import issue_token, parse_suki_public_keys
from tapevault.config import SETTINGS_DOC, Settings
from tapevault.core import policy
from tapevault.core.model import KeyRole, Tenant
from tapevault.errors import ConfigError, TapevaultError
from tapevault.runtime import Runtime, open_runtime, server_options

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

    settings = _settings(args)
    options = server_options(settings, args.log_level)
    log.info(
        "tapevault %s serving on %s with %d process(es) (public URL %s)",
        __version__,
        settings.port,
        settings.processes,
        settings.public_url,
    )
    if settings.processes == 1:
        runtime = open_runtime(settings)
        uvicorn.run(runtime.asgi(background=True), **options)
        return 0
    # Several processes share the listening socket; each builds its own runtime from the
    # environment (flags are passed on as TAPEVAULT_* variables), migrations run once here.
    open_runtime(settings).close()
    os.environ.update(settings.environment())
    uvicorn.run(
        "tapevault.runtime:app_from_environment",
        factory=True,
        workers=settings.processes,
        **options,
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


def _tenant_data(tenant: Tenant) -> dict[str, Any]:
    return {
        "name": tenant.name,
        "partner_id": tenant.partner_id,
        # An RS256 tenant's tokens are signed by its own key; its secret signs Twilio URLs only.
        "jwt_secret": None if tenant.suki_public_keys else tenant.jwt_secret,
        "suki_algorithm": "RS256" if tenant.suki_public_keys else "HS256",
        "workspace_id": tenant.workspace_id,
        "bot_id": tenant.bot_id,
        "kore_client_id": tenant.kore_client_id,
        "kore_client_secret": tenant.kore_client_secret,
        "retention_seconds": tenant.retention_seconds,
        "recording_enabled": tenant.recording_enabled,
    }


def _print_data(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(data)
    else:
        for key, value in data.items():
            print(f"{key}: {value}")


def cmd_tenant_create(args: argparse.Namespace) -> int:
    retention = policy.parse_duration(args.retention)
    public_keys = None
    if args.suki_public_key:
        try:
            public_keys = Path(args.suki_public_key).read_text()
            parse_suki_public_keys(public_keys)
        except (OSError, ValueError) as exc:
            raise TapevaultError(f"--suki-public-key {args.suki_public_key}: {exc}") from exc
    runtime = _runtime(args)
    created = runtime.vault.tenants.create(args.name, retention, suki_public_keys=public_keys)
    if args.recording == "off":
        runtime.vault.tenants.set_recording_enabled(created.tenant, False)
        created = replace(created, tenant=replace(created.tenant, recording_enabled=False))
    data = _tenant_data(created.tenant)
    data["api_key"] = created.api_key
    _print_data(data, args.json)
    runtime.close()
    return 0


def cmd_tenant_show(args: argparse.Namespace) -> int:
    with _tenant(args) as (_, tenant):
        _print_data(_tenant_data(tenant), args.json)
    return 0


def cmd_tenant_set(args: argparse.Namespace) -> int:
    with _tenant(args) as (runtime, tenant):
        if args.recording is not None:
            runtime.vault.tenants.set_recording_enabled(tenant, args.recording == "on")
        if args.retention is not None:
            runtime.context.retention.set_tenant_retention(
                tenant, policy.parse_duration(args.retention), cli_compliance.cli_actor()
            )
        found = runtime.repo.get_tenant(tenant.partner_id)
        assert found is not None
        _print_data(_tenant_data(found), args.json)
    return 0


def cmd_tenant_rotate_kore_secret(args: argparse.Namespace) -> int:
    with _tenant(args) as (runtime, tenant):
        print(runtime.vault.tenants.rotate_kore_secret(tenant))
    return 0


def cmd_apikey(args: argparse.Namespace) -> int:
    with _tenant(args) as (runtime, tenant):
        _apikey(args, runtime, tenant)
    return 0


def _apikey(args: argparse.Namespace, runtime: Runtime, tenant: Tenant) -> None:
    tenants = runtime.vault.tenants
    if args.apikey_command == "create":
        key, secret = tenants.issue_key(
            tenant, name=args.name, role=KeyRole(args.role), expires_in_days=args.expires_in_days
        )
        print(f"{secret}\n(key id {key.key_id}, role {key.role.value}; shown only this once)")
    elif args.apikey_command == "revoke":
        tenants.revoke_key(tenant, args.key_id)
        print(f"revoked {args.key_id}; requests with it fail from now on")
    else:
        for key in tenants.keys(tenant):
            state = "revoked" if key.revoked_ms else "active"
            print(f"{key.key_id}  {key.prefix}...  {key.role.value:6}  {state:7}  {key.name}")


@contextlib.contextmanager
def _tenant(args: argparse.Namespace) -> Iterator[tuple[Runtime, Tenant]]:
    """An open runtime and the tenant named by ``--partner``; closed on leaving."""
    runtime = _runtime(args)
    try:
        tenant = runtime.vault.repo.get_tenant(args.partner)
        if tenant is None:
            raise TapevaultError(f"no tenant with partner id {args.partner!r}")
        yield runtime, tenant
    finally:
        runtime.close()


def cmd_token_issue(args: argparse.Namespace) -> int:
    ttl = policy.parse_duration(args.ttl)
    with _tenant(args) as (runtime, partner):
        now = runtime.vault.clock.now()
    if args.kore:
        print(issue_kore_token(partner, now=now, ttl_seconds=ttl))
        return 0
    if partner.suki_public_keys:
        raise TapevaultError(
            "this tenant verifies RS256 tokens signed with its own private key; "
            "tapevault cannot issue them (use --kore for a Kore token)"
        )
    print(issue_token(partner, now=now, ttl_seconds=ttl, provider_id=args.provider_id))
    return 0


def cmd_twilio_url(args: argparse.Namespace) -> int:
    """Print a signed Twilio Media Streams URL for a partner (for a static TwiML <Stream>)."""
    from tapevault.http.twilio import sign_stream_url

    ttl = policy.parse_duration(args.ttl)
    with _tenant(args) as (runtime, partner):
        now = runtime.vault.clock.now()
    base = runtime.settings.public_url.replace("https://", "wss://", 1).replace(
        "http://", "ws://", 1
    )
    expires = int(now) + ttl
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
    create.add_argument(
        "--suki-public-key",
        metavar="FILE",
        help="PEM public key or JWKS file: Suki tokens must then be RS256 signed by it",
    )
    create.add_argument(
        "--recording", choices=["on", "off"], default="on", help="Amigo call recording (503 off)"
    )
    create.set_defaults(func=cmd_tenant_create)
    show = tenant_commands.add_parser("show", help="print a tenant's ids and secrets")
    _add_settings(show)
    show.add_argument("--partner", required=True, help="partner_id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_tenant_show)
    change = tenant_commands.add_parser("set", help="change a tenant's settings")
    _add_settings(change)
    change.add_argument("--partner", required=True, help="partner_id")
    change.add_argument("--json", action="store_true", help="print JSON")
    change.add_argument("--recording", choices=["on", "off"], default=None)
    change.add_argument("--retention", default=None, help="new default retention (30s, 7d)")
    change.set_defaults(func=cmd_tenant_set)
    rotate_kore = tenant_commands.add_parser(
        "rotate-kore-secret", help="new Kore client secret; tokens signed with the old one fail"
    )
    _add_settings(rotate_kore)
    rotate_kore.add_argument("--partner", required=True, help="partner_id")
    rotate_kore.set_defaults(func=cmd_tenant_rotate_kore_secret)

    apikey = commands.add_parser("apikey", help="workspace API keys (Amigo and native API)")
    apikey_commands = apikey.add_subparsers(dest="apikey_command", required=True)
    key_create = apikey_commands.add_parser("create", help="issue a key and print it once")
    key_create.add_argument("--name", default="api key")
    key_create.add_argument("--role", choices=["admin", "member"], default="member")
    key_create.add_argument("--expires-in-days", type=int, default=None)
    key_list = apikey_commands.add_parser("list", help="list keys by id and prefix")
    key_revoke = apikey_commands.add_parser("revoke", help="revoke a key at once")
    key_revoke.add_argument("key_id")
    for sub in (key_create, key_list, key_revoke):
        _add_settings(sub)
        sub.add_argument("--partner", required=True, help="partner_id")
        sub.set_defaults(func=cmd_apikey)

    token = commands.add_parser("token", help="issue sdp_suki_token (or Kore auth) JWTs")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    issue = token_commands.add_parser("issue", help="print a token signed with the partner secret")
    _add_settings(issue)
    issue.add_argument("--partner", required=True, help="partner_id")
    issue.add_argument("--provider-id", default=None)
    issue.add_argument("--ttl", default="1h", help="lifetime (s/m/h/d), default 1h")
    issue.add_argument(
        "--kore", action="store_true", help="a Kore.ai 'auth' JWT (appId, client secret)"
    )
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
    cli_compliance.register(commands, _add_settings, _tenant, _runtime)
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
