"""Seeks with nginx sending the bytes (``TAPEVAULT_ACCEL_REDIRECT``), against nginx alone.

Three servers answer the same random 64 KiB ranges of the large recording in one run:

- nginx alone serving the store's directory with sendfile (the reference, as in ``seeks``);
- tapevault alone (uvicorn sends the bytes, as in ``seeks``);
- tapevault behind nginx: nginx proxies the signed URL to a tapevault started with
  ``TAPEVAULT_ACCEL_REDIRECT``, which validates, records and answers with ``X-Accel-Redirect``;
  nginx sends the range from the same file and writes its delivery line, which tapevault reads.

The front nginx uses the shipped site's own ``log_format``, ``map`` and internal location
(copied out of ``deploy/nginx/tapevault.conf`` with only the paths changed), over plain HTTP
like the reference, with as many workers as tapevault has processes.

With ``seeks=True`` the front nginx also has the shipped site's seek location switched on
(``$tapevault_seek_cache`` 1, its ``auth_request`` question, answer cache and fallback, copied
the same way) and tapevault runs with ``TAPEVAULT_ACCEL_AUTHZ_SECONDS``: nginx asks once per
playback and cache period and serves the ranges itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.servers import (
    HOST,
    BenchSetupError,
    Server,
    free_port,
    nginx_preamble,
    spawn,
    start_tapevault,
)

SITE = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "tapevault.conf"
LOCATION = "/_tapevault_files/"


def shipped_parts(site: str, audio_root: Path, delivery_log: Path) -> tuple[str, str]:
    """The shipped site's http-level delivery settings and its internal location, with the
    store directory and the delivery log replaced: (http part, location block)."""
    log_format = re.search(r"^log_format tapevault_delivery .*?;$", site, re.M | re.S)
    mapping = re.search(r"^map \$http_range \$tapevault_accept_ranges \{.*?^\}", site, re.M | re.S)
    location = re.search(rf"^    location {LOCATION} \{{.*?^    \}}", site, re.M | re.S)
    if log_format is None or mapping is None or location is None:
        raise BenchSetupError(f"{SITE} has no X-Accel-Redirect location to measure")
    block = location.group(0)
    block = block.replace("alias /var/lib/tapevault/audio/;", f"alias {audio_root}/;")
    block = block.replace(
        "/var/log/nginx/tapevault-delivery.log tapevault_delivery;",
        f"{delivery_log} tapevault_delivery;",
    )
    return f"{log_format.group(0)}\n{mapping.group(0)}\n", block


def _block(site: str, start: str) -> str:
    """The shipped site's block (``map``/``location``) whose first line starts with ``start``
    (after its indentation), up to its closing brace at the same indentation."""
    match = re.search(rf"^( *){re.escape(start)}.*?\{{.*?^\1\}}", site, re.M | re.S)
    if match is None:
        raise BenchSetupError(f"{SITE} has no {start!r} block to measure")
    return match.group(0)


def _statement(site: str, start: str) -> str:
    match = re.search(rf"^{re.escape(start)}.*?;$", site, re.M | re.S)
    if match is None:
        raise BenchSetupError(f"{SITE} has no {start!r} to measure")
    return match.group(0)


def seek_parts(site: str, prefix: Path, audio_root: Path) -> tuple[str, str]:
    """The shipped seek location's http-level parts (switched on, the answer cache in
    ``prefix``) and its three locations (the store and delivery log replaced)."""
    switch = _block(site, "map $host $tapevault_seek_cache").replace("default 0;", "default 1;")
    http_part = "\n".join(
        [
            switch,
            _block(site, 'map "$tapevault_seek_cache:'),
            _block(site, "map $http_x_request_id $tapevault_request_id"),
            _statement(site, "proxy_cache_path ").replace(
                "/run/tapevault-nginx-authz", str(prefix / "authz-cache")
            ),
            _statement(site, "log_format tapevault_seek "),
        ]
    )
    media = _block(site, "location ~ ^/media/").replace(
        "alias /var/lib/tapevault/audio/$tapevault_file;", f"alias {audio_root}/$tapevault_file;"
    )
    media = media.replace(
        "/var/log/nginx/tapevault-delivery.log tapevault_seek;",
        f"{prefix / 'delivery.log'} tapevault_seek;",
    )
    locations = "\n".join(
        [media, _block(site, "location = /_tapevault_authz"), _block(site, "location @tapevault")]
    )
    return http_part + "\n", locations


def front_conf(
    prefix: Path,
    upstream_port: int,
    port: int,
    workers: int,
    audio_root: Path,
    *,
    seeks: bool = False,
) -> str:
    site = SITE.read_text()
    http_part, location = shipped_parts(site, audio_root, prefix / "delivery.log")
    if seeks:
        seek_http, seek_locations = seek_parts(site, prefix, audio_root)
        http_part += seek_http
        location += "\n" + seek_locations
    return f"""{nginx_preamble(prefix, workers)}http {{
    access_log off;
    tcp_nodelay on;
    keepalive_requests 100000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
{http_part}
    upstream tapevault_backend {{
        server {HOST}:{upstream_port};
        keepalive 64;
        keepalive_timeout 4s;
    }}
    server {{
        listen {HOST}:{port};
        proxy_http_version 1.1;
        proxy_buffering off;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Tapevault-Authz "";
        location / {{ proxy_pass http://tapevault_backend; }}
{location}
    }}
}}
"""


def start_front(
    nginx: str,
    prefix: Path,
    upstream_port: int,
    workers: int,
    audio_root: Path,
    *,
    seeks: bool = False,
) -> Server:
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(front_conf(prefix, upstream_port, port, workers, audio_root, seeks=seeks))
    (prefix / "delivery.log").touch()
    args = [nginx, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")]
    return spawn("nginx-front", [*args, "-g", "daemon off;"], port=port, log=prefix / "stdout.log")


def start_accel_tapevault(
    env: dict[str, str], port: int, scratch: Path, delivery_log: Path, *, authz_seconds: int = 0
) -> Server:
    """A second tapevault on the same data, handing its media GETs to nginx (and, with
    ``authz_seconds``, letting nginx cache its answers that long)."""
    settings = {
        **env,
        "TAPEVAULT_ACCEL_REDIRECT": LOCATION,
        "TAPEVAULT_ACCEL_LOG": str(delivery_log),
        "TAPEVAULT_TRUSTED_PROXIES": HOST,
        "TAPEVAULT_WORKERS": "0",
    }
    if authz_seconds:
        settings["TAPEVAULT_ACCEL_AUTHZ_SECONDS"] = str(authz_seconds)
    name = "tapevault-seeks.log" if authz_seconds else "tapevault-accel.log"
    return start_tapevault(settings, port, scratch / name)


def delivery_lines(prefix: Path, *, leased: bool = False) -> int:
    """Lines in the front nginx's delivery log (``leased``: only those sent under a cached
    answer, whose id carries ``.L``)."""
    try:
        with (prefix / "delivery.log").open("rb") as f:
            return sum(1 for line in f if not leased or b".L" in line)
    except OSError:
        return 0
