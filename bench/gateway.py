"""Issue 11: ranged reads served by tapevault from an object store (``gateway`` delivery) versus
the same reads made by the client straight against that store (``direct`` delivery: the store's
own presigned URL), as a ratio.

For each emulator that is installed (moto's S3 server always, Azurite when the tests' Node.js
packages are there) the scenario starts the emulator in its own process, a tapevault on SQLite
with ``TAPEVAULT_STORAGE_URL`` pointing at a fresh bucket, uploads one recording over HTTP like a
client, takes the gateway URL the Suki dialect hands out, switches the tenant to ``direct`` with
the CLI (``tenant set --delivery direct``) and takes the presigned URL it then hands out for the
same object. Both URLs are checked to serve the same bytes; then wrk asks each for random
``Range: bytes=a-b`` reads (8 MiB at c4, 64 KiB at c32, as the nginx scenarios), gateway and
direct alternating. The CPU of the emulator, of tapevault and of wrk is read over every measured
run, because the emulator is itself a Python (moto) or Node.js (Azurite) server on the same two
cores: when it is what saturates, the ratio says how much tapevault adds on top of a slow store,
not what it would do in front of S3.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from bench import data, emulators, fleet
from bench.modes import MiB
from bench.scenarios import Context, Result, Row, row, scenario, target
from bench.servers import BenchSetupError
from tapevault.audio_gen import write_tone_wav

# The recording in the store, by emulator and mode: big enough that 8 MiB ranges land all over
# it. moto answers a ranged GET by reading the whole object into memory, copying it and slicing
# it (moto/s3/responses.py, _handle_range_header), so its cost per request grows with the object,
# not the range: a 64 MiB object held it near 10 requests a second whatever the range, and a
# 2 s warm-up at c32 could see no answer at all. Azurite reads only the range from its file.
OBJECT_BYTES = {
    "s3": {"smoke": 2 * MiB, "quick": 16 * MiB, "full": 32 * MiB},
    "azure": {"smoke": 2 * MiB, "quick": 64 * MiB, "full": 256 * MiB},
}
_BYTES_PER_SECOND = data.BIG_RATE * data.BIG_CHANNELS * 2


def object_ranges(ctx: Context) -> Result:
    starters = [emulators.start_moto]
    if emulators.azurite_available():
        starters.append(emulators.start_azurite)
    rows: list[Row] = []
    stores: dict[str, Any] = {}
    for start in starters:
        emulator = start(ctx.scratch / f"emulator-{len(stores)}.log")
        try:
            stores[emulator.kind], found = _one_store(ctx, emulator)
        finally:
            emulator.stop()
        rows += found
    if "azure" not in stores:
        stores["azure"] = "not measured: Azurite not installed (tests/node: npm ci)"
    big, small = ctx.mode.range_bytes, ctx.mode.seek_bytes
    return scenario(
        f"Object store: {_span(big)} (c{ctx.mode.range_connections}) and {_span(small)} "
        f"(c{ctx.mode.seek_connections}) random ranges, tapevault gateway",
        "the same ranges read directly from the store by the client (direct mode's presigned "
        "URL); the emulator runs on the same 2 cores",
        {"seconds": ctx.mode.seconds, **stores},
        rows,
    )


def _one_store(ctx: Context, emulator: emulators.Emulator) -> tuple[dict[str, Any], list[Row]]:
    store_url = emulator.new_store_url()
    deployment = fleet.Deployment(
        ctx.scratch / f"objects-{emulator.kind}",
        {
            "TAPEVAULT_STORAGE_URL": store_url,
            "TAPEVAULT_STORAGE_ENDPOINT": emulator.endpoint,
            **emulator.env,
        },
    )
    partner, token = deployment.tenant()
    node = deployment.start()
    try:
        wanted = OBJECT_BYTES[emulator.kind][ctx.mode.name]
        gateway_url, direct_url, size = _urls(deployment, node.port, partner, token, wanted)
        figures: dict[str, Any] = {"store_url": store_url, "object_bytes": size}
        rows: list[Row] = []
        mode = ctx.mode
        for large, span, c in (
            (True, mode.range_bytes, mode.range_connections),
            (False, mode.seek_bytes, mode.seek_connections),
        ):

            def load(url: str, c: int = c, span: int = span) -> fleet.Measured:
                return fleet.measure(
                    [url],
                    seconds=mode.seconds,
                    warmup_seconds=mode.warmup_seconds,
                    threads=mode.threads,
                    connections=c,
                    wrk=ctx.tools["wrk"],
                    watch={"store": [emulator.server.pid], "tapevault": [node.pid]},
                    script="ranges.lua",
                    script_args=(str(size), str(span)),
                )

            # Direct first, then the gateway: both after their own warm-up.
            direct = load(direct_url)
            gateway = load(gateway_url)
            name = f"{emulator.label}, {_span(span)}"
            figures[_span(span)] = {"direct": direct.figures(), "gateway": gateway.figures()}
            if large:  # large ranges are about bandwidth, seeks about requests
                rows.append(
                    row(
                        f"{name}: throughput, gateway vs direct",
                        "GB/s",
                        gateway.gb_per_s,
                        direct.gb_per_s,
                        target("ratio", ">=", 0.8),
                    )
                )
            else:
                rows.append(
                    row(
                        f"{name}: req/s, gateway vs direct",
                        "req/s",
                        gateway.req_per_s,
                        direct.req_per_s,
                    )
                )
            rows += [
                row(f"{name}: p99, gateway vs direct", "ms", gateway.p99_ms, direct.p99_ms),
                row(
                    f"{name}: store CPU, gateway vs direct",
                    "cores",
                    gateway.cores["store"],
                    max(direct.cores["store"], 0.01),
                ),
            ]
        return figures, rows
    finally:
        deployment.stop()


def _span(n: int) -> str:
    return f"{n >> 20} MiB" if n >= MiB else f"{n >> 10} KiB"


def _urls(
    deployment: fleet.Deployment, port: int, partner: str, token: str, wanted: int
) -> tuple[str, str, int]:
    """Upload the recording; its gateway URL, then (tenant switched to direct) the store's
    presigned URL for it, both checked to serve the same bytes; and its size."""
    api = data.Api(port, token)
    session = api.new_session()
    source = deployment.scratch / "source.wav"
    write_tone_wav(
        source, wanted / _BYTES_PER_SECOND, sample_rate=data.BIG_RATE, channels=data.BIG_CHANNELS
    )
    try:
        api.upload(session, source)
    finally:
        source.unlink()
    api.end(session)
    (link,) = api.recordings(session, 1, timeout_s=120 + wanted / (5 << 20))
    gateway_url: str = link["presigned_url"]
    size = int(api.media(gateway_url, "HEAD"))
    deployment.cli("tenant", "set", "--tenant", partner, "--delivery", "direct")
    direct_url = _direct_url(api, session, gateway_url)
    for first, last in ((0, 4095), (size // 2, size // 2 + 65535), (size - 4096, size - 1)):
        through = api.media(gateway_url, byte_range=f"{first}-{last}")
        if _fetch(direct_url, first, last) != through or len(through) != last - first + 1:
            raise BenchSetupError(f"gateway and direct URLs disagree on bytes {first}-{last}")
    return gateway_url, direct_url, size


def _direct_url(api: data.Api, session: str, gateway_url: str) -> str:
    """The listing's URL once it is no longer tapevault's own (the tenant's delivery changed)."""
    gateway_base = gateway_url.split("/", 3)[:3]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        (link,) = api.recordings(session, 1, timeout_s=10)
        url: str = link["presigned_url"]
        if url.split("/", 3)[:3] != gateway_base:
            return url
        time.sleep(0.2)
    raise BenchSetupError("the tenant's URLs did not become the store's after --delivery direct")


def _fetch(url: str, first: int, last: int) -> bytes:
    request = urllib.request.Request(url, headers={"Range": f"bytes={first}-{last}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        if answer.status != 206:
            raise BenchSetupError(f"the store answered a range with {answer.status}")
        body: bytes = answer.read()
        return body
