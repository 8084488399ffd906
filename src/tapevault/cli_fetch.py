"""``tapevault fetch SESSION --out DIR``: download a session's recordings with the Python client
(``tapevault.client``), from any tapevault server, with a Suki token or an admin API key.

Resumable: an interrupted run leaves ``.part`` files that the next run continues. A progress bar
on a terminal; plain lines on stderr otherwise (logs, CI).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from tapevault.client import Client, ClientError, Progress, Recording, Session
from tapevault.client.models import safe_name

DEFAULT_URL = "http://127.0.0.1:8080"


class Reporter:
    """Progress of each file: a bar redrawn in place on a terminal, otherwise a line when a
    file starts and when it is done (never a flood of lines into a log)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.current: str | None = None

    def __call__(self, recording: Recording, done: int, total: int | None) -> None:
        name = recording.filename
        if name != self.current:
            self.current = name
            if not self.tty:
                print(f"fetching {name} ({_size(total)})", file=self.stream, flush=True)
        if self.tty:
            share = done / total if total else 0.0
            bar = "#" * int(share * 30)
            print(
                f"\r{name} [{bar:<30}] {share:4.0%} {_size(done)}/{_size(total)}",
                end="",
                file=self.stream,
                flush=True,
            )

    def of(self, recording: Recording) -> Progress:
        def report(done: int, total: int | None) -> None:
            self(recording, done, total)

        return report

    def done(self, path: Path) -> None:
        if self.tty:
            print(file=self.stream)
        print(f"{path} ({_size(path.stat().st_size)}, sha256 checked)", file=self.stream)
        self.current = None


def _size(n: int | None) -> str:
    if n is None:
        return "? bytes"
    return f"{n / 1e6:.1f} MB" if n >= 1_000_000 else f"{n} bytes"


def register(commands: Any) -> None:
    help_text = "download a session's recordings (resumable; sha256 checked)"
    fetch = commands.add_parser("fetch", help=help_text, description=help_text)
    fetch.add_argument("session", metavar="SESSION", help="an ambient session id or a call SID")
    fetch.add_argument("--out", required=True, type=Path, metavar="DIR", help="where to write")
    fetch.add_argument(
        "--url", default=None, help=f"the server (TAPEVAULT_URL; default {DEFAULT_URL})"
    )
    fetch.add_argument(
        "--token",
        default=None,
        help="an sdp_suki_token (better: TAPEVAULT_SUKI_TOKEN, not visible to other users)",
    )
    fetch.add_argument(
        "--api-key",
        default=None,
        help="an admin API key, for calls (better: TAPEVAULT_API_KEY)",
    )
    fetch.add_argument(
        "--workspace",
        default=None,
        help="the workspace id, with --api-key (TAPEVAULT_WORKSPACE_ID)",
    )
    fetch.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for processing (300)"
    )
    fetch.set_defaults(func=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> int:
    env = os.environ
    url = args.url or env.get("TAPEVAULT_URL") or DEFAULT_URL
    token = args.token or env.get("TAPEVAULT_SUKI_TOKEN")
    api_key = args.api_key or env.get("TAPEVAULT_API_KEY")
    workspace = args.workspace or env.get("TAPEVAULT_WORKSPACE_ID")
    if not token and not api_key:
        print("tapevault fetch: give --token (a Suki token) or --api-key", file=sys.stderr)
        return 2
    reporter = Reporter(sys.stderr)
    try:
        with Client(
            url, suki_token=token, api_key=api_key, workspace_id=workspace, timeout=60
        ) as client:
            if token:
                status = client.wait_until_ready(args.session, timeout=args.timeout)
                paths = _fetch_session(client, status, args.out, reporter)
            else:
                paths = _fetch_call(client, args.session, args.out, reporter)
    except KeyboardInterrupt:
        print("\ntapevault fetch: interrupted; run it again to continue", file=sys.stderr)
        return 130
    except ClientError as exc:
        print(f"\ntapevault fetch: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the output directory: not writable, disk full
        print(f"\ntapevault fetch: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def _fetch_session(client: Client, status: Session, out: Path, reporter: Reporter) -> list[Path]:
    paths = []
    for recording in status.recordings:
        if recording.status != "available":
            continue
        path = client.download(
            recording,
            out / recording.filename,
            progress=reporter.of(recording),
        )
        reporter.done(path)
        paths.append(path)
    if not paths:
        raise ClientError(f"{status.session_id} has no available recording")
    return paths


def _fetch_call(client: Client, call_sid: str, out: Path, reporter: Reporter) -> list[Path]:
    """A call's channels (``<call_sid>-inbound.wav``, ``-outbound.wav``) through Amigo's
    download route, checked against the native API's sha256 (so the key must be an admin key,
    and ``--workspace`` is needed)."""
    session = client.session(call_sid)
    if session.kind != "call":
        raise ClientError("only calls can be fetched with an API key; use a Suki token")
    paths = []
    for recording in session.recordings:
        if recording.status != "available" or recording.channel not in ("inbound", "outbound"):
            continue
        path = client.download_call(
            call_sid,
            recording.channel,
            out / safe_name(f"{call_sid}-{recording.channel}.wav"),
            sha256=recording.sha256,
            progress=reporter.of(recording),
        )
        reporter.done(path)
        paths.append(path)
    if not paths:
        raise ClientError(f"{call_sid} has no available recording")
    return paths
