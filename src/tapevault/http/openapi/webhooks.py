"""Webhooks: a tenant's endpoints, their secrets and delivery logs (``http/webhooks.py``).

tapevault's own. An admin workspace key as Bearer; ``{code, message}`` errors. What is sent to
the endpoints (the events, their headers and signatures) is described in the README's
"Webhooks" section: OpenAPI 3.1's ``webhooks`` would need a server to call, which this is not.
"""

from __future__ import annotations

from tapevault.core.events import EVENT_TYPES
from tapevault.http.openapi.common import (
    BEARER_SCHEME,
    JSON,
    Json,
    Section,
    nullable,
    operation,
    path_param,
    query_param,
    ref,
    response,
)

TAG = "Webhooks"

_STR = {"type": "string"}
_INT = {"type": "integer"}
_ISO = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC, milliseconds."}
_EVENTS = {"type": "array", "items": {"type": "string", "enum": sorted(EVENT_TYPES)}}
_ENDPOINT = {
    "id": _STR,
    "url": _STR,
    "description": nullable(_STR),
    "events": _EVENTS,
    "created_at": _ISO,
    "enabled": {"type": "boolean", "description": "False once the receiver answered 410."},
    "disabled_at": nullable(_ISO),
    "disabled_reason": nullable(_STR),
    "previous_secret_valid_until": nullable(
        {**_ISO, "description": "After a rotation, the old secret signs too until then."}
    ),
}
_DELIVERY = {
    "id": _STR,
    "webhook_id": _STR,
    "event_id": {**_STR, "description": "The webhook-id header: the same for every attempt."},
    "event_type": {"type": "string", "enum": sorted(EVENT_TYPES)},
    "session_id": _STR,
    "status": {"type": "string", "enum": ["pending", "delivered", "failed", "cancelled"]},
    "attempts": _INT,
    "next_attempt_at": nullable(_ISO),
    "last_attempt_at": nullable(_ISO),
    "last_status": nullable({**_INT, "description": "The receiver's HTTP status."}),
    "last_error": nullable(_STR),
    "delivered_at": nullable(_ISO),
    "created_at": _ISO,
}


def _object(properties: Json, description: str) -> Json:
    return {
        "type": "object",
        "description": description,
        "required": list(properties),
        "properties": properties,
    }


SCHEMAS: Json = {
    "WebhookEndpoint": _object(_ENDPOINT, "A webhook endpoint (never its secret)."),
    "WebhookEndpointWithSecret": _object(
        {
            **_ENDPOINT,
            "secret": {
                **_STR,
                "description": "whsec_<base64>: verifies the signatures. Shown only now.",
            },
        },
        "A webhook endpoint with its new secret.",
    ),
    "WebhookEndpoints": _object(
        {"webhooks": {"type": "array", "items": ref("WebhookEndpoint")}},
        "The tenant's endpoints, oldest first.",
    ),
    "WebhookDelivery": _object(_DELIVERY, "One event sent (or to send) to one endpoint."),
    "WebhookDeliveries": _object(
        {
            "deliveries": {"type": "array", "items": ref("WebhookDelivery")},
            "next_cursor": nullable(_STR),
        },
        "An endpoint's deliveries, newest first.",
    ),
    "WebhookRequest": {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "url": {**_STR, "description": "http or https; a public address unless allowed."},
            "events": {**_EVENTS, "description": "The types to send (default: all)."},
            "description": {**_STR, "maxLength": 200},
        },
    },
}


def _error(status: int, description: str) -> Json:
    return response(description, ref("SukiError"), example={"code": status, "message": "..."})


_E = {
    "400": _error(
        400,
        "A malformed body, URL, event type or page parameter; or a refused "
        "receiver address (SSRF).",
    ),
    "401": _error(401, "Missing or invalid API key."),
    "403": _error(403, "The key is not an admin key."),
    "404": _error(404, "No such endpoint or delivery (another tenant's answers the same)."),
    "405": _error(405, "Another method than the path takes."),
    "413": _error(413, "The body is over 16 KiB."),
    "500": _error(500, "Service failure."),
    "503": _error(503, "The database cannot be reached; nothing was done."),
}


def _op(
    method: str,
    operation_id: str,
    summary: str,
    ok: tuple[str, Json],
    errors: str,
    parameters: list[Json],
    body: str | None = None,
) -> Json:
    status, answer = ok
    return {
        method: operation(
            tag=TAG,
            operation_id=operation_id,
            summary=summary,
            responses={status: answer, **{code: _E[code] for code in errors.split()}},
            parameters=parameters,
            request_body=None
            if body is None
            else {"required": True, "content": {JSON: {"schema": ref(body)}}},
            security=BEARER_SCHEME,
        )
    }


_ID = path_param("webhook_id", "The endpoint's id.")
_DELIVERY_ID = path_param("delivery_id", "A delivery's id, from the endpoint's log.")
_PAGE = [
    query_param("limit", "Deliveries per page.", {"type": "integer", "minimum": 1, "maximum": 200}),
    query_param("cursor", "The next_cursor of the previous page.", _STR),
]


def paths() -> Json:
    base = "/api/v1/webhooks"
    return {
        base: {
            **_op(
                "post",
                "createWebhook",
                "Register an endpoint; its secret is in this answer only",
                ("201", response("The endpoint and its secret.", ref("WebhookEndpointWithSecret"))),
                "400 401 403 413 500 503",
                [],
                "WebhookRequest",
            ),
            **_op(
                "get",
                "listWebhooks",
                "The tenant's endpoints, never their secrets",
                ("200", response("The endpoints.", ref("WebhookEndpoints"))),
                "401 403 500 503",
                [],
            ),
        },
        f"{base}/{{webhook_id}}": {
            **_op(
                "get",
                "getWebhook",
                "One endpoint",
                ("200", response("The endpoint.", ref("WebhookEndpoint"))),
                "401 403 404 500 503",
                [_ID],
            ),
            **_op(
                "delete",
                "deleteWebhook",
                "Remove an endpoint and its delivery log; nothing more is sent to it",
                ("204", response("Removed.")),
                "401 403 404 500 503",
                [_ID],
            ),
        },
        f"{base}/{{webhook_id}}/rotate-secret": _op(
            "post",
            "rotateWebhookSecret",
            "A new secret; the previous one keeps signing too for 24 hours",
            ("200", response("The endpoint and its new secret.", ref("WebhookEndpointWithSecret"))),
            "401 403 404 500 503",
            [_ID],
        ),
        f"{base}/{{webhook_id}}/deliveries": _op(
            "get",
            "listWebhookDeliveries",
            "The endpoint's delivery log, newest first",
            ("200", response("A page of deliveries.", ref("WebhookDeliveries"))),
            "400 401 403 404 500 503",
            [_ID, *_PAGE],
        ),
        f"{base}/{{webhook_id}}/deliveries/{{delivery_id}}/replay": _op(
            "post",
            "replayWebhookDelivery",
            "Send that delivery's event to the endpoint again (a new delivery, due now)",
            ("202", response("The new delivery.", ref("WebhookDelivery"))),
            "401 403 404 500 503",
            [_ID, _DELIVERY_ID],
        ),
    }


SECTION = Section(
    tag={
        "name": TAG,
        "description": (
            "Endpoints that are told when audio is ready, a session completed, audio expired or "
            "was deleted, or a legal hold changed; signed per the Standard Webhooks "
            "specification. Credential: an admin workspace API key as Bearer."
        ),
    },
    paths=paths(),
    schemas=SCHEMAS,
)
