"""Real nginx in front of a real tapevault, with the shipped ``deploy/nginx/tapevault.conf``.

The site file is used as shipped: ``render`` replaces only the values its comments mark FILL IN
that a test must change (the upstream address, the listen port, the certificate paths), each of
which must appear exactly once, so the file cannot drift from what the test runs. The ``http {}``
around it is the test's (as it is the operator's): nginx runs unprivileged in a temporary prefix
(``nginx -p PREFIX -c nginx.conf -g 'daemon off;'``) with its pid, logs and temporary files
there.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.server import free_port

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
