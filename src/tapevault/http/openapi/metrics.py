"""``/metrics``: the Prometheus exposition, for an admin key (tapevault.http.metrics)."""

from __future__ import annotations

from tapevault.http.openapi.common import BEARER_SCHEME, Json, Section, operation, ref, response

TAG = "Metrics"
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def _error(status: int, description: str, message: str) -> Json:
    return response(description, ref("SukiError"), example={"code": status, "message": message})


def paths() -> Json:
    return {
        "/metrics": {
            "get": operation(
                tag=TAG,
                operation_id="metrics",
                summary="Prometheus metrics of every server process, summed",
                description=(
                    "The Prometheus text format (README, Metrics, lists every metric): request "
                    "durations by route template and status, bytes served, Range requests, "
                    "signed-URL refusals, store latency, the job queue, live streams, the access "
                    "log's writer, purges, holds, webhook deliveries. No tenant appears in any "
                    "label. While the database is down, an admin key seen in the last hour still "
                    "scrapes, with tapevault_database_up 0. Also served without a key on "
                    "TAPEVAULT_METRICS_LISTEN when set."
                ),
                responses={
                    "200": response(
                        "The exposition.", content={TEXT_FORMAT: {"schema": {"type": "string"}}}
                    ),
                    "401": _error(
                        401, "Missing, unknown, revoked or expired API key.", "Invalid API key."
                    ),
                    "403": _error(
                        403,
                        "The key is not an admin key.",
                        "This API key may not do that; use a key with the admin role.",
                    ),
                    "503": _error(
                        503,
                        "The database is down and this key was not seen lately, "
                        "or the metrics could not be collected.",
                        "The database is unavailable; retry shortly.",
                    ),
                },
                security=BEARER_SCHEME,
            )
        }
    }


SECTION = Section(
    tag={
        "name": TAG,
        "description": (
            "Operations: the Prometheus exposition, for a workspace API key with the admin role."
        ),
    },
    paths=paths(),
)
