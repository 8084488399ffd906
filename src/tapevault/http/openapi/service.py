"""The service's own endpoints: liveness, this document, and the pages for people."""

from __future__ import annotations

from tapevault.http.openapi.common import Json, Section, operation, response

TAG = "Service"
_HTML: Json = {"text/html": {"schema": {"type": "string"}}}
_READINESS: Json = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"enum": ["ready", "unavailable"]},
        "checks": {
            "type": "object",
            "description": '"ok", or the reason the check fails.',
            "required": ["database", "migrations", "store"],
            "properties": {
                name: {"type": "string"} for name in ("database", "migrations", "store")
            },
        },
    },
}


def paths() -> Json:
    return {
        "/healthz": {
            "get": operation(
                tag=TAG,
                operation_id="healthz",
                summary="Liveness and the access log's health",
                responses={
                    "200": response(
                        "The process serves requests.",
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                        },
                    ),
                    "503": response(
                        "The access log cannot be written (unavailable: audited requests "
                        "answer 503; the writer retries on its own), or its checkpoints stopped "
                        "because the database contradicts the checkpoint journal (degraded: "
                        "requests are served, an operator must look).",
                        {
                            "type": "object",
                            "required": ["status", "reason"],
                            "properties": {
                                "status": {"enum": ["unavailable", "degraded"]},
                                "reason": {"type": "string"},
                                "audit": {"type": "string"},
                            },
                        },
                    ),
                },
            )
        },
        "/readyz": {
            "get": operation(
                tag=TAG,
                operation_id="readyz",
                summary="Readiness: the database, its schema and the object store",
                description=(
                    "For a load balancer: 200 while the database answers, its schema is at "
                    "this version's migrations and the object store answers; 503 otherwise, "
                    "with a reason for each failing check. Checked at most once a second per "
                    "process; no credentials, and no host, path or driver message in the "
                    "answer. `/healthz` is liveness (the process works)."
                ),
                responses={
                    "200": response("Ready to take traffic.", _READINESS),
                    "503": response(
                        "A dependency fails: each failing check's value is its reason.",
                        _READINESS,
                    ),
                },
            )
        },
        "/": {
            "get": operation(
                tag=TAG,
                operation_id="home",
                summary="What this server is, for people",
                description="An HTML page linking the API reference, this document and liveness.",
                responses={"200": response("HTML.", content=_HTML)},
            )
        },
        "/docs": {
            "get": operation(
                tag=TAG,
                operation_id="docs",
                summary="The API reference, for people",
                description=(
                    "This document rendered as one HTML page, every operation grouped by "
                    "dialect; no script, nothing loaded from elsewhere."
                ),
                responses={"200": response("HTML.", content=_HTML)},
            )
        },
        "/openapi.json": {
            "get": operation(
                tag=TAG,
                operation_id="openapi",
                summary="This document",
                responses={"200": response("OpenAPI 3.1.", {"type": "object"})},
            )
        },
    }


SECTION = Section(
    tag={
        "name": TAG,
        "description": "Liveness, readiness, the API description and its reference page.",
    },
    paths=paths(),
)
