"""Issue 11: recording-URL throughput of two tapevault nodes versus one, on one PostgreSQL
database.

Two ``tapevault serve`` processes (one process each, ``TAPEVAULT_PROCESSES=1``) with different
data directories share a database made for this run and one bucket in moto's S3 server (the
deployment the issue describes; the URL endpoint itself never reads audio). The three recordings
are uploaded through node A and the listing is checked through node B before any load.

The load is measured two ways, each against its own one-node reference:

- **behind nginx** (the figure with the target): one nginx worker as a round-robin load balancer
  with kept-alive upstream connections, one listening port in front of node A alone and one in
  front of A and B. It is how a deployment runs, but the balancer's own CPU comes out of the same
  two cores;
- **two wrk processes, summed**: wrk straight at each node, the connections split between them,
  against one wrk with all of them at node A. No balancer cost, so it is the nodes' own ceiling
  on this machine.

The CPU of each node, nginx, the PostgreSQL backends serving this database, moto, wrk and the
whole machine is recorded over every run: on two cores, what bounds the two-node figure is
whoever else needs the second core.
"""

from __future__ import annotations

from typing import Any

from bench import data, emulators, fleet, pgdb
from bench.scenarios import Context, Result, row, scenario, target
from bench.servers import BenchSetupError, free_port


def two_nodes(ctx: Context) -> Result:
    store = emulators.start_moto(ctx.scratch / "nodes-moto.log")
    try:
        with pgdb.pg_database("nodes") as database_url:
            return _measure(ctx, store, database_url)
    finally:
        store.stop()


def _measure(ctx: Context, store: emulators.Emulator, database_url: str) -> Result:
    one_port, two_port = free_port(), free_port()
    deployment = fleet.Deployment(
        ctx.scratch / "nodes",
        {
            "TAPEVAULT_DATABASE_URL": database_url,
            "TAPEVAULT_STORAGE_URL": store.new_store_url(),
            "TAPEVAULT_STORAGE_ENDPOINT": store.endpoint,
            "TAPEVAULT_PROCESSES": "1",
            **store.env,
        },
        public_url=f"http://127.0.0.1:{two_port}",
    )
    _, token = deployment.tenant()
    try:
        a = deployment.start("node-a")
        b = deployment.start("node-b")
        session = fleet.url_session(data.Api(a.port, token))
        # Any node answers for any session: B lists what A stored, before the load starts.
        data.Api(b.port, token).recordings(session, 3, timeout_s=10)
        front = fleet.start_front(
            ctx.tools["nginx"],
            ctx.scratch / "nodes-front",
            {one_port: [a.port], two_port: [a.port, b.port]},
        )
        try:
            path = fleet.urls_path(session)
            for port in (one_port, two_port):
                data.Api(port, token).recordings(session, 3, timeout_s=10)
            watch = {
                "node_a": [a.pid],
                "node_b": [b.pid],
                "nginx": [front.pid],
                "postgres": pgdb.pg_backends(database_url),
                "store": [store.server.pid],
            }

            def load(*bases: str) -> fleet.Measured:
                urls = [base + path for base in bases]
                return fleet.url_load(ctx.mode, ctx.tools["wrk"], urls, token, watch)

            one = load(f"http://127.0.0.1:{one_port}")
            two = load(f"http://127.0.0.1:{two_port}")
            alone = load(a.base_url)
            summed = load(a.base_url, b.base_url)
        finally:
            front.stop()
        for node in (a, b):
            if node.proc.poll() is not None:
                raise BenchSetupError(f"{node.name} exited:\n{node.log_tail()}")
    finally:
        deployment.stop()
    runs: dict[str, Any] = {
        "one_node_behind_nginx": one.figures(),
        "two_nodes_behind_nginx": two.figures(),
        "one_node_one_wrk": alone.figures(),
        "two_nodes_two_wrk": summed.figures(),
    }
    return scenario(
        f"Recording URLs on PostgreSQL, two nodes (c{ctx.mode.urls_connections}, one process "
        "each, one database, one bucket)",
        "one node, same front, same load",
        {"connections": ctx.mode.urls_connections, "seconds": ctx.mode.seconds, **runs},
        [
            row(
                "behind nginx (round robin): req/s, 2 nodes vs 1",
                "req/s",
                two.req_per_s,
                one.req_per_s,
                target("ratio", ">=", 1.7),
            ),
            row("behind nginx: p99, 2 nodes vs 1", "ms", two.p99_ms, one.p99_ms),
            row(
                "two wrk processes summed, no balancer: req/s, 2 nodes vs 1",
                "req/s",
                summed.req_per_s,
                alone.req_per_s,
            ),
            row("two wrk processes: p99, 2 nodes vs 1", "ms", summed.p99_ms, alone.p99_ms),
            row(
                "machine CPU behind nginx, 2 nodes vs 1",
                "cores",
                two.cores["machine"],
                one.cores["machine"],
            ),
        ],
    )
