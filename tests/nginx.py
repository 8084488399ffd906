"""Real nginx in front of a real tapevault, with the shipped ``deploy/nginx/tapevault.conf``.

The site file is used as shipped: ``render`` replaces only the values its comments mark FILL IN
that a test must change (the upstream address, the listen port, the certificate paths), each of
which must appear exactly once, so the file cannot drift from what the test runs. The ``http {}``
around it is the test's (as it is the operator's): nginx runs unprivileged in a temporary prefix
(``nginx -p PREFIX -c nginx.conf -g 'daemon off;'``) with its pid, logs and temporary files
there.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.server import Server, free_port
from tests.support import WAIT_SECONDS, make_session, wait_for

SITE = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "tapevault.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)

# The shipped values a test replaces (exactly these, each once).
SHIPPED_UPSTREAM = "server 127.0.0.1:8080;"
SHIPPED_LISTEN = "listen 443 ssl;"
SHIPPED_CERTIFICATE = "/etc/ssl/tapevault/fullchain.pem"
SHIPPED_KEY = "/etc/ssl/tapevault/privkey.pem"
SHIPPED_FILES = "alias /var/lib/tapevault/audio/;"
SHIPPED_DELIVERY_LOG = "/var/log/nginx/tapevault-delivery.log tapevault_delivery;"
SHIPPED_SEEK_FILES = "alias /var/lib/tapevault/audio/$tapevault_file;"
SHIPPED_SEEK_LOG = "/var/log/nginx/tapevault-delivery.log tapevault_seek;"
SHIPPED_AUTHZ_CACHE = "proxy_cache_path /run/tapevault-nginx-authz "
SHIPPED_SEEK_SWITCH = "map $host $tapevault_seek_cache {\n    default 0;"
UNDERSCORES = "underscores_in_headers on;"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, valid a day: (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def render(
    site: str,
    *,
    upstream_port: int,
    port: int,
    cert: Path,
    key: Path,
    underscores: bool = True,
    files: Path | None = None,
    delivery_log: Path | None = None,
    seeks: bool = False,
) -> str:
    """The shipped site with only the upstream, the listen port and the certificate changed
    (and, to show what it is for, ``underscores_in_headers`` dropped when asked); with
    ``files`` and ``delivery_log``, the X-Accel-Redirect and seek locations' store directory
    and log; the seek location's cache beside the certificate; ``seeks``: the seek location
    switched on, as an operator does (``$tapevault_seek_cache`` 1)."""
    cache = cert.parent / "nginx-authz-cache"
    replacements = [
        (SHIPPED_UPSTREAM, f"server 127.0.0.1:{upstream_port};"),
        (SHIPPED_LISTEN, f"listen 127.0.0.1:{port} ssl;"),
        (SHIPPED_CERTIFICATE, str(cert)),
        (SHIPPED_KEY, str(key)),
        (SHIPPED_FILES, f"alias {files or '/nonexistent'}/;"),
        (
            SHIPPED_DELIVERY_LOG,
            f"{delivery_log or '/dev/null'} tapevault_delivery;",
        ),
        (SHIPPED_SEEK_FILES, f"alias {files or '/nonexistent'}/$tapevault_file;"),
        (SHIPPED_SEEK_LOG, f"{delivery_log or '/dev/null'} tapevault_seek;"),
        (SHIPPED_AUTHZ_CACHE, f"proxy_cache_path {cache} "),
    ]
    if seeks:
        replacements.append(
            (SHIPPED_SEEK_SWITCH, SHIPPED_SEEK_SWITCH.replace("default 0;", "default 1;"))
        )
    if not underscores:
        replacements.append((UNDERSCORES, "# underscores_in_headers left at its default (off)"))
    for shipped, value in replacements:
        count = site.count(shipped)
        assert count == 1, f"{SITE.name} should contain {shipped!r} once, not {count} times"
        site = site.replace(shipped, value)
    return site


@dataclass
class Nginx:
    """One nginx master process serving ``site`` (already rendered) from ``prefix``."""

    prefix: Path
    site: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    def write(self) -> None:
        """The operator's part: an nginx.conf whose http {} includes the site."""
        p = self.prefix
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (p / "temp" / name).mkdir(parents=True, exist_ok=True)
        (p / "tapevault.conf").write_text(self.site)
        # As root nginx would hand its workers to "nobody", who cannot enter the test's 0700
        # temporary directory; unprivileged, the directive is ignored.
        user = "user root root;" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"""{user}
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/temp/client_body;
    proxy_temp_path {p}/temp/proxy;
    fastcgi_temp_path {p}/temp/fastcgi;
    uwsgi_temp_path {p}/temp/uwsgi;
    scgi_temp_path {p}/temp/scgi;
    include {p}/tapevault.conf;
}}
"""
        )

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the configuration."""
        assert NGINX is not None
        self.write()
        return subprocess.run(
            [NGINX, "-t", "-p", str(self.prefix), "-c", str(self.conf)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def start(self) -> Nginx:
        assert NGINX is not None
        self.write()
        with (self.prefix / "nginx.out").open("ab") as out:
            self.process = subprocess.Popen(
                [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited at start-up:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"nginx did not listen on {self.port}:\n{self.output()}")

    def output(self) -> str:
        parts = []
        for name in ("nginx.out", "error.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-5000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def tls_context(cert: Path) -> ssl.SSLContext:
    """A client context that trusts only the test's certificate."""
    return ssl.create_default_context(cafile=str(cert))


LOCATION = "/_tapevault_files/"  # the shipped site's internal location of the audio files


@dataclass
class Deployment:
    """tapevault with ``TAPEVAULT_ACCEL_REDIRECT`` behind nginx with the shipped site: its
    internal location serves tapevault's store and logs deliveries where tapevault reads them."""

    server: Server
    nginx: Nginx
    cert: Path
    deliveries: Path  # nginx's delivery log
    tenant: dict[str, str]
    token: str

    @property
    def admin(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tenant['api_key']}"}

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        transport = httpx.HTTPTransport(verify=tls_context(self.cert), local_address=source)
        return httpx.Client(base_url=self.nginx.base, transport=transport, timeout=30)

    def delivery_lines(self) -> list[dict[str, str]]:
        if not self.deliveries.exists():
            return []
        text = self.deliveries.read_text()
        return [json.loads(line) for line in text.splitlines() if line]

    def new_lines(self, before: int, count: int) -> list[dict[str, str]]:
        """The delivery lines after the first ``before``, once ``count`` of them are written."""

        def written() -> list[dict[str, str]] | None:
            lines = self.delivery_lines()
            return lines[before:] if len(lines) >= before + count else None

        return wait_for(written, what=f"{count} delivery line(s)")

    def media_url(self, seconds: float = 4.0) -> tuple[str, str, bytes]:
        """A new recording's signed URL (nginx's address), its id and its stored bytes."""
        session_id, _ = make_session(self.server, self.token, seconds=seconds)
        with self.client() as client:
            listed = client.get(
                f"/api/v1/ambient/session/{session_id}/recording",
                headers={"sdp_suki_token": self.token},
            )
        assert listed.status_code == 200, listed.text
        entry = listed.json()["recordings"][0]
        stored = next((self.server.data_dir / "audio").rglob(f"{entry['recording_id']}.wav"))
        return entry["presigned_url"], entry["recording_id"], stored.read_bytes()

    def expired_url(self) -> str:
        """A new recording's signed URL as a server whose clock is a day behind issued it
        (through the same database and files): expired now."""
        session_id, _ = make_session(self.server, self.token)
        yesterday = Server(self.server.data_dir)
        yesterday.start(
            TAPEVAULT_PUBLIC_URL=self.nginx.base,
            TAPEVAULT_CLOCK_OFFSET_SECONDS="-86400",
            TAPEVAULT_WORKERS="0",
        )
        try:
            suki = {"sdp_suki_token": yesterday.token(self.tenant["partner_id"])}
            listed = httpx.get(
                f"{yesterday.base}/api/v1/ambient/session/{session_id}/recording", headers=suki
            )
            assert listed.status_code == 200, listed.text
            return str(listed.json()["recordings"][0]["presigned_url"])
        finally:
            yesterday.close()

    def playbacks(self, recording_id: str) -> list[dict[str, Any]]:
        with self.client() as client:
            # Only playbacks: every read of the history is itself recorded, and a page of
            # those reads would push the playback off the page while a test waits for it.
            history = client.get(
                f"/api/v1/recordings/{recording_id}/access",
                params={"action": "media.playback"},
                headers=self.admin,
            )
        assert history.status_code == 200, history.text
        return [r for r in history.json()["records"] if r["action"] == "media.playback"]

    def sealed_playback(
        self, recording_id: str, requests: int, timeout: float = 2 * WAIT_SECONDS
    ) -> dict[str, Any]:
        """The recording's one playback record once it is sealed with ``requests`` responses
        (playbacks go idle after 3 s here)."""

        def sealed() -> dict[str, Any] | None:
            found = self.playbacks(recording_id)
            assert len(found) <= 1, found  # one player: one record
            done = [p for p in found if p["detail"].get("requests") == requests]
            return done[0] if done else None

        return wait_for(
            sealed, timeout=timeout, every=0.25, what=f"the sealed playback of {recording_id}"
        )


@contextlib.contextmanager
def deployed(root: Path, name: str, *, seeks: bool = False, **env: str) -> Iterator[Deployment]:
    """The shipped site (its seek location switched on with ``seeks``) in front of a tapevault
    that hands media to it; ``env`` adds to tapevault's settings."""
    cert, key = make_certificate(root)
    server = Server(root / "data")
    prefix = root / "nginx"
    prefix.mkdir()
    deliveries = prefix / "delivery.log"
    proxy = Nginx(prefix, "")
    proxy.site = render(
        SITE.read_text(),
        upstream_port=server.port,
        port=proxy.port,
        cert=cert,
        key=key,
        files=server.data_dir / "audio",
        delivery_log=deliveries,
        seeks=seeks,
    )
    proxy.start()
    try:
        server.start(
            TAPEVAULT_TRUSTED_PROXIES="127.0.0.1",
            TAPEVAULT_PUBLIC_URL=proxy.base,
            TAPEVAULT_ACCEL_REDIRECT=LOCATION,
            TAPEVAULT_ACCEL_LOG=str(deliveries),
            TAPEVAULT_PLAYBACK_IDLE="3",
            TAPEVAULT_CORS_ORIGINS="https://player.example",
            **env,
        )
        try:
            tenant = server.tenant(name)
            yield Deployment(
                server, proxy, cert, deliveries, tenant, server.token(tenant["partner_id"])
            )
        finally:
            server.stop()
    finally:
        proxy.stop()
