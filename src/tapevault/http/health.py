"""``GET /healthz``: 200 while the process can do its job, 503 with a reason while it cannot;
``GET /readyz``: 200 while what it depends on answers (``tapevault.readiness``), else 503 with a
reason per failing check.

Load balancers poll it, so it reads state and writes nothing: the access log's health is what its
writer last saw (a failed or stuck cycle; the writer retries on its own and probes the store
while failing), so a process whose audited requests all answer 503 is taken out of rotation and
put back once they would succeed again. It also tells an operator when the access log stopped
signing checkpoints because the database contradicts the checkpoint journal (a database rolled
back or rewritten): requests are still served, but someone must look.

While live streams' copies to the object store fail (``tapevault.ingest.streamcopy``) it answers
200 with ``"status": "degraded"``, the reason and since when (the bytes waiting are in the metrics):
the node still takes and acknowledges audio (durable on its disk), so it stays in rotation (a
store down for every node would otherwise take them all out), but what losing the node would
lose grows until the store answers again.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from tapevault.core.access import AccessLog
from tapevault.core.auditlog import AuditLog
from tapevault.http.asgi import (
    NO_STORE,
    Receive,
    Scope,
    Send,
    refuse_unless_read,
    send_fixed,
    send_json,
)
from tapevault.readiness import Readiness

ACCESS_LOG_DOWN = (
    "The access log cannot be written: audited requests answer 503 until it can "
    "(the server log says why)."
)
STREAM_COPIES_FAILING = (
    "Live streams' audio cannot be copied to the object store: acks go on (durable on this "
    "node's disk), but the loss of this node would lose what is not copied yet."
)
_OK = orjson.dumps({"status": "ok"})
# The wall-clock time live streams' copies started failing, or None. (How many bytes wait is
# in the metrics, behind an admin key: this answer is for anyone who can reach the port.)
StreamCopies = Callable[[], float | None]


class Health:
    def __init__(self, access_log: AccessLog, stream_copies: StreamCopies | None = None) -> None:
        self.access_log = access_log
        self.stream_copies = stream_copies
        self.audit = access_log if isinstance(access_log, AuditLog) else None
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_OK)).encode()),
            NO_STORE,
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await refuse_unless_read(scope, send):
            return
        method = scope["method"]
        if not self.access_log.healthy:
            body = {"status": "unavailable", "reason": ACCESS_LOG_DOWN}
            await send_json(send, 503, body, [(b"retry-after", b"1")], head_only=method == "HEAD")
            return
        problem = self.audit.checkpoint_problem if self.audit is not None else None
        if problem is not None:
            body = {"status": "degraded", "reason": problem, "audit": problem}
            await send_json(send, 503, body, head_only=method == "HEAD")
            return
        if self.stream_copies is not None:
            failing_since = self.stream_copies()
            if failing_since is not None:
                copies = {"copy_failing_since": int(failing_since)}
                degraded = {"status": "degraded", "reason": STREAM_COPIES_FAILING}
                await send_json(
                    send, 200, {**degraded, "streams": copies}, head_only=method == "HEAD"
                )
                return
        await send_fixed(scope, send, self.headers, _OK)


class Ready:
    """Readiness for a load balancer or an orchestrator: ``{"status": "ready", "checks":
    {...}}``, or 503 ``"unavailable"`` with each failing check's reason in ``checks``."""

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await refuse_unless_read(scope, send):
            return
        answer = await self.readiness.answer()
        head_only = scope["method"] == "HEAD"
        if answer.ready:
            await send_json(
                send, 200, {"status": "ready", "checks": answer.checks}, head_only=head_only
            )
            return
        body = {"status": "unavailable", "checks": answer.checks}
        await send_json(send, 503, body, [(b"retry-after", b"1")], head_only=head_only)
