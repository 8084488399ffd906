"""The service's own endpoints: liveness and this document."""

from __future__ import annotations

from tapevault.http.openapi.common import Json, Section, operation, response

TAG = "Service"


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
                        "The access log cannot be written (audited requests answer 503); "
                        "the writer retries on its own.",
                        {
                            "type": "object",
                            "required": ["status", "reason"],
                            "properties": {
                                "status": {"const": "unavailable"},
                                "reason": {"type": "string"},
                            },
                        },
                    ),
                },
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
    tag={"name": TAG, "description": "Liveness and the API description."}, paths=paths()
)
