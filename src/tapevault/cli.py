"""The ``tapevault`` command: serve, demo, migrate, tenants, tokens, signing keys, sessions.

Each command offers as flags only the settings it uses (``serve`` all of them, the database
commands where the data is); every setting can also come from its ``TAPEVAULT_*`` variable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from sqlalchemy import Engine

from tapevault import (
    __version__,
    cli_compliance,
    cli_fetch,
    cli_sessions,
    cli_webhooks,
    listening,
)
from tapevault.auth.kore import issue_kore_token
from tapevault.auth.suki import issue_token, parse_suki_public_keys
from tapevault.cli_options import (
    DATA,
    DATABASE,
    ERASING,
    STORAGE,
    URLS,
    WORKER,
    NotConfirmed,
    add_tenant,
    canonical_argv,
    server_settings,
    settings_adder,
)
from tapevault.config import SETTINGS_DOC, Settings, parse_size
from tapevault.core import policy
from tapevault.core.model import Delivery, KeyRole, RecordingStatus, Tenant
from tapevault.core.quota import UNLIMITED
from tapevault.db.engine import make_engine
from tapevault.db.gauges import job_queue
from tapevault.errors import ConfigError, TapevaultError
from tapevault.http import requestlog
from tapevault.http.twilio import SIGNED_URL_PARAMETER
from tapevault.ingest.liveness import node_name
from tapevault.listening import PortUnavailable
from tapevault.observe import listener as metrics_listener
from tapevault.observe.exposition import METRICS_DIR, DatabaseGauges, prepare_multiprocess_dir
from tapevault.runtime import Runtime, open_runtime, server_options

log = logging.getLogger("tapevault")

DESCRIPTION = (
    "Keep conversation audio and hand out short-lived signed URLs to it. Settings come from "
    "flags or TAPEVAULT_* environment variables (a flag wins); each command's --help lists the "
    "settings it uses."
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
    # An inherited listening socket (socket activation, a supervisor, the test harness) is served
    # as it is: whoever bound it chose the address, and no other process can take the port from
    # under us between choosing and binding it. (uvicorn wraps the fd as an AF_UNIX socket object,
    # but the event loop takes peer addresses from the kernel: clients' IPs stay right.)
    settings.ensure_data_dir()  # before "serving on": an unusable directory is said first
    options = server_options(settings, args.log_level)
    if settings.request_log:
        requestlog.to_stderr()
    if args.fd is None:
        # Say in one line that the port is taken, before migrating anything (uvicorn would log it
        # only after the runtime is built, among its own lines).
        listening.bind(settings.host, settings.port).close()
    else:
        del options["host"], options["port"]
        options["fd"] = _listening_fd(args.fd)
    log.info(
        "tapevault %s serving on %s with %d process(es) (public URL %s)",
        __version__,
        settings.port if args.fd is None else f"inherited socket {args.fd}",
        settings.processes,
        settings.public_url,
    )
    if settings.processes == 1:
        runtime = open_runtime(settings)
        _listen_for_metrics(settings, runtime.engine)
        uvicorn.run(runtime.asgi(background=True), **options)
        return 0
    # Several processes share the listening socket; each builds its own runtime from the
    # environment (flags are passed on as TAPEVAULT_* variables), migrations run once here.
    open_runtime(settings).close()
    os.environ.update(settings.environment())
    # Their metrics meet in per-process files a scrape sums (tapevault.observe.exposition):
    # emptied now, so that no earlier run's counts are added to this one's.
    prepare_multiprocess_dir(settings.data_dir / METRICS_DIR)
    if settings.metrics_listen is not None:
        _listen_for_metrics(settings, make_engine(settings.database_url))
    uvicorn.run(
        "tapevault.runtime:app_from_environment",
        factory=True,
        workers=settings.processes,
        **options,
    )
    return 0


def _listen_for_metrics(settings: Settings, engine: Engine) -> None:
    """The separate metrics listener, if one is set; in this process, the one that owns the
    port (the parent of several processes: see ``tapevault.observe.listener``)."""
    if settings.metrics_listen is None:
        return
    host, port = settings.metrics_listen
    try:
        metrics_listener.start(host, port, DatabaseGauges(partial(job_queue, engine)))
    except OSError as exc:
        raise ConfigError(
            "TAPEVAULT_METRICS_LISTEN", f"cannot listen on {host}:{port} ({exc.strerror})"
        ) from None


def _listening_fd(fd: int) -> int:
    """``fd`` if it is a listening TCP socket; a setting error naming ``--fd`` otherwise."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        raise ConfigError("--fd", f"{fd} is not an open socket ({exc.strerror})") from None
    with sock:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or not sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            raise ConfigError("--fd", f"{fd} is not a listening TCP socket")
    return fd


def cmd_worker(args: argparse.Namespace) -> int:
    """Run finalization jobs in the foreground (for servers started with TAPEVAULT_WORKERS=0)."""
    runtime = _runtime(args)
    runtime.recover()
    if args.once:
        print(f"ran {runtime.worker.run_until_idle()} job(s)")
        if runtime.worker.webhooks is not None:
            print(f"made {runtime.worker.webhooks.run_until_idle()} webhook delivery attempt(s)")
    else:
        log.info("tapevault worker %s waiting for jobs", runtime.worker.owner)
        # SIGTERM (systemd, any supervisor) ends the loop after the job at hand; a job cut
        # short by SIGKILL instead runs again once its lease expires.
        signal.signal(signal.SIGTERM, lambda *_: runtime.worker.stop(timeout=0))
        with contextlib.suppress(KeyboardInterrupt):
            runtime.worker.run_forever()
    runtime.close()
    return 0


def cmd_peaks_backfill(args: argparse.Namespace) -> int:
    """Compute the waveform peaks of available recordings that have none: those finalized
    before peaks existed, or whose peaks failed. Safe to run again; each run does what is left."""
    from tapevault.ingest.peaks import backfill

    runtime = _runtime(args)
    try:
        recordings = runtime.vault.ingest.recordings_with_status(RecordingStatus.AVAILABLE)
        if args.tenant:
            recordings = [r for r in recordings if r.partner_id == args.tenant]
        computed, failed = backfill(runtime.vault.store, recordings)
    finally:
        runtime.close()
    print(f"computed the waveform peaks of {computed} recording(s); {failed} failed")
    return 1 if failed else 0


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
        # An RS256 tenant's tokens are signed by its own key: it has no secret to show.
        "jwt_secret": None if tenant.suki_public_keys else tenant.jwt_secret,
        "suki_algorithm": "RS256" if tenant.suki_public_keys else "HS256",
        "workspace_id": tenant.workspace_id,
        "bot_id": tenant.bot_id,
        "kore_client_id": tenant.kore_client_id,
        "kore_client_secret": tenant.kore_client_secret,
        "retention_seconds": tenant.retention_seconds,
        "recording_enabled": tenant.recording_enabled,
        # null: the server's TAPEVAULT_TENANT_QUOTA; 0: unlimited.
        "storage_quota_bytes": tenant.storage_quota_bytes,
        "delivery": tenant.delivery.value,
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
    # Beside the key, or on stderr with --json, so that the output stays one JSON document.
    print(
        "The api_key is shown only this once (only its hash is kept): store it now; "
        "`tapevault tenant show` prints the other credentials again.",
        file=sys.stderr if args.json else sys.stdout,
    )
    runtime.close()
    return 0


def cmd_tenant_show(args: argparse.Namespace) -> int:
    with _tenant(args) as (_, tenant):
        _print_data(_tenant_data(tenant), args.json)
    return 0


def _quota(text: str) -> int | None:
    """``--quota``: a size, ``unlimited`` (0) or ``default`` (None: the server's setting)."""
    value = text.strip().lower()
    if value == "default":
        return None
    if value in ("unlimited", "none", "off", "0"):
        return UNLIMITED
    return parse_size("--quota", text)


def cmd_tenant_set(args: argparse.Namespace) -> int:
    with _tenant(args) as (runtime, tenant):
        if args.recording is not None:
            runtime.vault.tenants.set_recording_enabled(tenant, args.recording == "on")
        if args.retention is not None:
            runtime.context.retention.set_tenant_retention(
                tenant, policy.parse_duration(args.retention), cli_compliance.cli_actor()
            )
        if args.quota is not None:
            runtime.vault.tenants.set_quota(tenant, _quota(args.quota))
        if args.delivery is not None:
            runtime.vault.tenants.set_delivery(
                tenant, Delivery(args.delivery), store_presigns=runtime.vault.direct.available
            )
        found = runtime.vault.tenants.get_tenant(tenant.partner_id)
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
    """An open runtime and the tenant named by ``--tenant``; closed on leaving."""
    runtime = _runtime(args)
    try:
        tenant = runtime.vault.tenants.get_tenant(args.tenant)
        if tenant is None:
            raise TapevaultError(f"no tenant with id {args.tenant!r}")
        yield runtime, tenant
    finally:
        runtime.close()


def cmd_token_issue(args: argparse.Namespace) -> int:
    ttl = policy.parse_duration(args.ttl)
    with _tenant(args) as (runtime, tenant):
        now = runtime.vault.clock.now()
    if args.kore:
        print(issue_kore_token(tenant, now=now, ttl_seconds=ttl))
        return 0
    if tenant.suki_public_keys:
        raise TapevaultError(
            "this tenant verifies RS256 tokens signed with its own private key; "
            "tapevault cannot issue them (use --kore for a Kore token)"
        )
    print(issue_token(tenant, now=now, ttl_seconds=ttl, provider_id=args.provider_id))
    return 0


def cmd_twilio_url(args: argparse.Namespace) -> int:
    """Print a signed Twilio Media Streams URL for a tenant (for a static TwiML <Stream>)."""
    ttl = policy.parse_duration(args.ttl)
    with _tenant(args) as (runtime, tenant):
        expires = int(runtime.vault.clock.now()) + ttl
        query = runtime.vault.links.twilio_stream_query(tenant.partner_id, expires)
    base = runtime.settings.public_url.replace("https://", "wss://", 1).replace(
        "http://", "ws://", 1
    )
    route = f"{base}/twilio/media-stream"
    if not args.twiml:
        print(f"{route}?{query}")
        return 0
    # Twilio's <Stream url> may drop a query string: the URL travels as a custom parameter.
    url = quoteattr(f"{route}?{query}")
    print(
        f"<Response><Connect><Stream url={quoteattr(route)}>\n"
        f'  <Parameter name="{SIGNED_URL_PARAMETER}" value={url}/>\n'
        "</Stream></Connect></Response>"
    )
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    runtime = _runtime(args)
    vault = runtime.vault
    if args.keys_command == "rotate":
        print(f"new signing key {vault.keys.rotate_signing_key()} (older keys still verify)")
    elif args.keys_command == "remove":
        if not vault.keys.remove_signing_key(args.key_id):
            raise TapevaultError(f"no signing key {args.key_id!r}")
        print(f"removed {args.key_id}; URLs it signed no longer verify")
    else:
        for index, key_id in enumerate(vault.keys.signing_key_ids()):
            print(f"{key_id}{'  (signing)' if index == 0 else ''}")
    runtime.close()
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    """``node show``: this data directory's node name and the jobs waiting for each node;
    ``node forget NAME``: a node whose disk is gone for good will never run the jobs bound to
    it (its recovered live streams): let any node run them, with what the store holds."""
    runtime = _runtime(args)
    try:
        if args.node_command == "forget":
            if args.name == node_name(runtime.settings.data_dir) and not args.yes:
                raise TapevaultError(
                    f"{args.name} is this data directory's own node: its spools are here; "
                    "run this on another node, or add --yes"
                )
            freed = runtime.vault.ingest.forget_node(args.name)
            print(
                f"{freed} job(s) of node {args.name} may now run on any node; the live "
                "audio that was only on its disk is lost"
            )
            return 0
        print(f"this node: {node_name(runtime.settings.data_dir)}")
        for node, waiting in sorted(runtime.vault.ingest.jobs_waiting_for_nodes().items()):
            print(f"{node}: {waiting} job(s) waiting for it")
        return 0
    finally:
        runtime.close()


def cmd_demo(args: argparse.Namespace) -> int:
    from tapevault.demo import run_demo

    settings = _settings(args)
    # Before anything else: a port that is taken must not leave a tenant behind, nor let the
    # demo talk to whatever else answers there. The server is handed this very socket.
    listener = listening.bind(settings.host, settings.port)
    # The same protocols and limits as ``serve``; the server is handed the bound socket.
    options = server_options(settings, args.log_level)
    del options["host"], options["port"]
    return run_demo(settings, listener, serve=not args.no_serve, server_options=options)


# --- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tapevault", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"tapevault {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        parent: Any, name: str, help_text: str, settings: Sequence[str], **kwargs: Any
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text, **kwargs
        )
        settings_adder(settings)(sub)
        return sub

    def group(name: str, help_text: str) -> Any:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        return sub.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")

    serve = command(commands, "serve", "run the HTTP server", server_settings())
    serve.add_argument(
        "--fd",
        type=int,
        metavar="N",
        help="serve on the listening TCP socket inherited as file descriptor N instead of "
        "binding --host and --port (socket activation, process supervisors)",
    )
    _add_log_level(serve)
    serve.set_defaults(func=cmd_serve)
    migrate = command(commands, "migrate", "apply database migrations", DATABASE)
    _add_log_level(migrate)
    migrate.set_defaults(func=cmd_migrate)
    worker = command(commands, "worker", "run background finalization jobs", WORKER)
    worker.add_argument("--once", action="store_true", help="run due jobs, then exit")
    _add_log_level(worker)
    worker.set_defaults(func=cmd_worker)
    demo = command(
        commands,
        "demo",
        "serve with a demo tenant and a generated conversation",
        tuple(name for name in server_settings() if name not in ("processes", "metrics_listen")),
    )
    demo.add_argument("--no-serve", action="store_true", help="set up and print, then exit")
    _add_log_level(demo)
    demo.set_defaults(func=cmd_demo)

    tenants = group("tenant", "manage tenants (customer organisations)")
    create = command(
        tenants,
        "create",
        "create a tenant and print its credentials (the API key only this once)",
        DATA,
    )
    create.add_argument("name", help="the organisation's name, for people")
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
    show = command(tenants, "show", "print a tenant's ids and secrets", DATA)
    add_tenant(show)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_tenant_show)
    # The store's settings: --delivery direct needs to know whether the store presigns.
    change = command(tenants, "set", "change a tenant's settings", STORAGE)
    add_tenant(change)
    change.add_argument("--json", action="store_true", help="print JSON")
    change.add_argument(
        "--recording", choices=["on", "off"], default=None, help="Amigo call recording (503 off)"
    )
    change.add_argument("--retention", default=None, help="new default retention (30s, 7d)")
    change.add_argument(
        "--quota",
        default=None,
        help="stored audio the tenant may keep (50GiB), unlimited, or default "
        "(TAPEVAULT_TENANT_QUOTA); past it uploads get 507",
    )
    change.add_argument(
        "--delivery",
        choices=["gateway", "direct"],
        default=None,
        help="gateway: tapevault serves the audio (every read logged); direct: URLs are the "
        "object store's own presigned URLs (needs s3://, gs:// or az:// storage)",
    )
    change.set_defaults(func=cmd_tenant_set)
    rotate_kore = command(
        tenants,
        "rotate-kore-secret",
        "new Kore client secret; tokens signed with the old one fail",
        DATA,
    )
    add_tenant(rotate_kore)
    rotate_kore.set_defaults(func=cmd_tenant_rotate_kore_secret)

    apikeys = group("apikey", "workspace API keys (Amigo and native API)")
    key_create = command(apikeys, "create", "issue a key and print it once", DATA)
    key_create.add_argument("--name", default="api key", help="a label for people")
    key_create.add_argument(
        "--role",
        choices=["admin", "member"],
        default="member",
        help="admin keys may also manage keys, holds, retention and read the access log",
    )
    key_create.add_argument(
        "--expires-in-days", type=int, default=None, help="the key stops working after this"
    )
    key_list = command(apikeys, "list", "list keys by id and prefix", DATA)
    key_revoke = command(apikeys, "revoke", "revoke a key at once", DATA)
    key_revoke.add_argument("key_id", help="the key's id, as `apikey list` prints it")
    for sub in (key_create, key_list, key_revoke):
        add_tenant(sub)
        sub.set_defaults(func=cmd_apikey)

    tokens = group("token", "issue sdp_suki_token (or Kore auth) JWTs")
    issue = command(tokens, "issue", "print a token signed with the tenant's jwt_secret", DATA)
    add_tenant(issue)
    issue.add_argument("--provider-id", default=None, help="the provider_id claim (a clinician)")
    issue.add_argument("--ttl", default="1h", help="lifetime (s/m/h/d), default 1h")
    issue.add_argument(
        "--kore", action="store_true", help="a Kore.ai 'auth' JWT (appId, client secret)"
    )
    issue.set_defaults(func=cmd_token_issue)

    twilio = group("twilio", "Twilio Media Streams helpers")
    twilio_url = command(twilio, "url", "print a signed <Stream> URL", URLS)
    add_tenant(twilio_url)
    twilio_url.add_argument("--ttl", default="365d", help="validity (s/m/h/d), default 365d")
    twilio_url.add_argument(
        "--twiml",
        action="store_true",
        help="print TwiML whose <Stream> carries the URL as its signed_url <Parameter>",
    )
    twilio_url.set_defaults(func=cmd_twilio_url)

    keys = group("keys", "media URL signing keys")
    command(keys, "list", "list keys, the signing one first", DATA).set_defaults(func=cmd_keys)
    rotate = command(keys, "rotate", "add a new signing key (older ones still verify)", DATA)
    rotate.set_defaults(func=cmd_keys)
    remove = command(keys, "remove", "remove a key; URLs it signed stop verifying", DATA)
    remove.add_argument("key_id", help="the key's id, as `keys list` prints it")
    remove.set_defaults(func=cmd_keys)
    nodes = group("node", "the nodes sharing this database (README: Several nodes)")
    command(
        nodes, "show", "this data directory's node and the jobs waiting for each node", DATA
    ).set_defaults(func=cmd_node)
    forget = command(
        nodes,
        "forget",
        "let any node run the jobs bound to a node whose disk is gone for good",
        DATA,
    )
    forget.add_argument("name", help="the node's name, as `node show` prints it")
    forget.add_argument("--yes", action="store_true", help="even if it is this node")
    forget.set_defaults(func=cmd_node)
    peaks = group("peaks", "waveform peaks of recordings")
    backfill = command(
        peaks, "backfill", "compute the peaks of available recordings that have none", DATA
    )
    add_tenant(backfill, required=False, help="only this tenant's recordings (default: all)")
    _add_log_level(backfill)
    backfill.set_defaults(func=cmd_peaks_backfill)
    cli_compliance.register(
        commands, settings_adder(DATA), settings_adder(ERASING), _tenant, _runtime
    )
    cli_sessions.register(commands, settings_adder(DATA), _tenant)
    cli_webhooks.register(commands, settings_adder((*DATA, "webhook_allow_private")), _tenant)
    cli_fetch.register(commands)
    return parser


def _add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the least severe log messages to print (default: info)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(canonical_argv(sys.argv[1:] if argv is None else argv))
    level = str(getattr(args, "log_level", "info"))
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic narrates every migration at INFO; a user running `tenant create` needs none of it.
    logging.getLogger("alembic").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"tapevault: invalid setting {exc.message}", file=sys.stderr)
        return 2
    except (PortUnavailable, NotConfirmed) as exc:
        print(f"tapevault: {exc.message}", file=sys.stderr)
        return 2
    except TapevaultError as exc:
        print(f"tapevault: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
