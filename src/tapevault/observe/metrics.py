"""Every metric tapevault exports, in one place (README "Metrics" lists them).

Names follow Prometheus conventions and, for HTTP, OpenTelemetry's semantic conventions
(``http.server.request.duration`` becomes ``http_server_request_duration_seconds``, labelled
``http_request_method``, ``http_route`` and ``http_response_status_code``). Every label takes
values from a fixed, small set: a route *template*, never a raw path; a method outside the known
ones is ``_OTHER``; refusal reasons and actions are fixed words.

With several server processes (``TAPEVAULT_PROCESSES`` > 1) ``tapevault serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a directory of its own before the processes start, and
prometheus-client keeps each value in a per-process memory-mapped file that a scrape sums
(``exposition``). Gauges say how they combine across processes (``multiprocess_mode``): live
streams add up over the processes alive; the access-log writer's gauges take the worst.

Gauges read from the database (job queue) are not here: they are computed at scrape time
(``exposition.DatabaseGauges``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from tapevault import webhooks

# No ``*_created`` series: one per labelled child doubles the scrape for a timestamp nobody reads
# (and multiprocess mode has none anyway, so one process and several look the same).
disable_created_metrics()  # type: ignore[no-untyped-call]

# OpenTelemetry's advice for http.server.request.duration (seconds).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
ACK_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)

METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
OTHER_METHOD = "_OTHER"  # OpenTelemetry's word for a method outside the known set
UNMATCHED_ROUTE = "unmatched"  # a path no route matched: one label, whatever the path

REFUSAL_REASONS = frozenset({"expired", "invalid", "revoked"})
HOLD_ACTIONS = ("set", "cleared")
# The labels of core.webhooks.Outcome: a bounded set (the receiver's status class, not its status).
WEBHOOK_OUTCOMES = (
    "delivered",
    "gone",
    "refused",
    "timeout",
    "error",
    "http_1xx",
    "http_3xx",
    "http_4xx",
    "http_5xx",
)

http_request_duration = Histogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP server requests, by method, route template and status.",
    ["http_request_method", "http_route", "http_response_status_code"],
    buckets=HTTP_BUCKETS,
)
media_bytes_sent = Counter(
    "tapevault_media_bytes_sent",
    "Body bytes of recordings' audio sent to clients (signed media URLs and proxied downloads).",
)
range_requests = Counter(
    "tapevault_range_requests",
    "Requests for a recording's audio that carried a Range header, by response status.",
    ["status"],
)
signed_url_refusals = Counter(
    "tapevault_signed_url_refusals",
    "Signed URLs refused, by reason: expired, invalid (malformed, altered, wrong grant), "
    "revoked (the player link it came through was revoked).",
    ["reason"],
)
store_operation = Histogram(
    "tapevault_store_operation_seconds",
    "Latency of object store operations (read_range: until the first chunk).",
    ["operation"],
    buckets=STORE_BUCKETS,
)
live_streams = Gauge(
    "tapevault_live_streams",
    "Live audio streams being written now.",
    multiprocess_mode="livesum",
)
stream_ack_latency = Histogram(
    "tapevault_stream_ack_latency_seconds",
    "Time from new stream audio waking the group commit to its acknowledgement (write, sync, "
    "lease check), per batch.",
    buckets=ACK_BUCKETS,
)
stream_copy_failures = Counter(
    "tapevault_stream_copy_failures",
    "Copies of live streams' acknowledged audio to the object store that failed (retried).",
)
stream_copy_behind = Gauge(
    "tapevault_stream_copy_behind_bytes",
    "Acknowledged bytes of live streams not yet copied to the object store (what losing this "
    "node would lose now).",
    multiprocess_mode="livesum",
)
access_log_integration = Histogram(
    "tapevault_access_log_integration_delay_seconds",
    "Per access record: from its event (the request) to its integration into the chain and "
    "tree by the deployment's integrator (durable long before: requests wait for that only).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 60.0),
)
access_log_queue_depth = Gauge(
    "tapevault_access_log_queue_depth",
    "Access records waiting for the writer (kept for retry, plus hand-overs queued), as the "
    "writer last saw it; the largest over processes.",
    multiprocess_mode="livemax",
)
access_log_lag = Gauge(
    "tapevault_access_log_integration_lag_seconds",
    "Age of the oldest access record in the writer's last cycle when it ended (committed, or "
    "still waiting after a failure); the largest over processes.",
    multiprocess_mode="livemax",
)
access_log_failures = Counter(
    "tapevault_access_log_integration_failures",
    "Access-log writer cycles that failed (their waiting requests answered 503).",
)
purged_recordings = Counter(
    "tapevault_purged_recordings",
    "Recordings whose audio the retention purge erased.",
)
legal_holds = Counter(
    "tapevault_legal_holds",
    "Legal holds set and cleared.",
    ["action"],
)
webhook_deliveries = Counter(
    "tapevault_webhook_deliveries",
    "Webhook delivery attempts, by outcome.",
    ["outcome"],
)

# Label children made once: ``labels()`` takes a lock and builds a tuple each call.
_REFUSALS = {reason: signed_url_refusals.labels(reason) for reason in REFUSAL_REASONS}
_HOLDS = {action: legal_holds.labels(action) for action in HOLD_ACTIONS}
_WEBHOOKS = {outcome: webhook_deliveries.labels(outcome) for outcome in WEBHOOK_OUTCOMES}
_RANGES = {status: range_requests.labels(str(status)) for status in (200, 206, 304, 412, 416)}


_STORE_OPERATIONS = ("put", "read_range", "stat", "delete", "local_copy")
_STORE = {operation: store_operation.labels(operation) for operation in _STORE_OPERATIONS}


def observe_store(operation: str, seconds: float) -> None:
    """``storage.timed.TimedStore``'s observer."""
    child = _STORE.get(operation)
    if child is None:
        child = _STORE[operation] = store_operation.labels(operation)  # named in code: bounded
    child.observe(seconds)


def count_refusal(reason: str) -> None:
    """A signed URL refused; a reason outside the known ones is counted as ``invalid``."""
    _REFUSALS.get(reason, _REFUSALS["invalid"]).inc()


def count_range_request(status: int) -> None:
    child = _RANGES.get(status)
    if child is None:
        child = range_requests.labels(str(status))  # a status is three digits: bounded
    child.inc()


def count_webhook_delivery(outcome: str) -> None:
    """One delivery attempt, by ``core.webhooks.Outcome.label``: ``delivered`` (2xx), ``gone``
    (410: the endpoint is disabled), ``refused`` (its address is not allowed), ``timeout``,
    ``error`` (no answer), ``http_3xx``/``http_4xx``/``http_5xx`` (retried)."""
    child = _WEBHOOKS.get(outcome)
    if child is None:
        raise ValueError(f"unknown webhook delivery outcome {outcome!r}")
    child.inc()


# Attached once per process, at import: the dispatcher calls it after every attempt.
webhooks.on_outcome(count_webhook_delivery)


class RetentionCounter:
    """``core.retention.RetentionCounts`` counted here."""

    def hold_changed(self, action: str) -> None:
        _HOLDS[action].inc()

    def purged(self, recordings: int) -> None:
        purged_recordings.inc(recordings)


class AuditCounter:
    """``core.auditlog.AuditCounts`` counted here: once per writer cycle, never per request;
    and ``core.integrator.LagCounts``: once per integration step."""

    def integrated(self, lags: list[float]) -> None:
        observe = access_log_integration.observe
        for lag in lags:
            observe(lag)

    def cycle(self, *, queued: int, lag_seconds: float, failed: bool) -> None:
        access_log_queue_depth.set(queued)
        access_log_lag.set(lag_seconds)
        if failed:
            access_log_failures.inc()
