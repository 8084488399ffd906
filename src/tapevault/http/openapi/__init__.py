"""The OpenAPI 3.1 document served at ``/openapi.json``: every HTTP endpoint of the server.

Written by hand, one module per dialect, because the endpoints are raw ASGI (no framework models
to generate from) and because the seeds' own schemas must appear name for name: a client built
from a vendor's published document must find the same operations and shapes here. Each module
returns a ``Section``; this one joins them and refuses a name defined twice, so two dialects can
never silently replace each other's schema.

Not in the document, because OpenAPI cannot describe them: the WebSocket endpoints
(``/api/v1/ambient/session/{id}/stream``, see ``createStreamTicket``, and Twilio's
``/twilio/media-stream``) and the CORS preflight every path answers.
"""

from __future__ import annotations

import copy
from typing import Any

from tapevault import __version__
from tapevault.http.openapi import (
    admin,
    amigo,
    byteranges,
    kore,
    media,
    metrics,
    player,
    service,
    suki,
    tus,
    webhooks,
)
from tapevault.http.openapi.common import BEARER_SCHEME, KORE_SCHEME, SUKI_SCHEME, Json, Section

__all__ = ["openapi_document"]

SECTIONS: tuple[Section, ...] = (
    suki.SECTION,
    amigo.SECTION,
    kore.SECTION,
    media.SECTION,
    admin.SECTION,
    player.SECTION,
    tus.SECTION,
    service.SECTION,
    metrics.SECTION,
    webhooks.SECTION,
)

SECURITY_SCHEMES: Json = {
    SUKI_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "sdp_suki_token",
        "description": "Partner JWT (HS256 or RS256, pinned per partner); partner_id claim.",
    },
    BEARER_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "API key issued via `POST /v1/{workspace_id}/api-keys`. Pass the returned "
            "`api_key` value as a Bearer token."
        ),
    },
    player.PLAYER_KEY_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Player-Key",
        "description": "A player link's secret, which the page reads from its #k= fragment.",
    },
    KORE_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "auth",
        "description": "The Kore app's JWT: HS256 with its client secret, appId claim.",
    },
}


def _merge(into: Json, more: Json, what: str) -> None:
    for name, value in more.items():
        if name in into:
            raise ValueError(f"{what} {name!r} is defined twice")
        into[name] = value


def openapi_document(public_url: str) -> dict[str, Any]:
    """The whole document, its server being ``public_url``; a fresh copy on every call."""
    paths: Json = {}
    schemas: Json = dict(byteranges.SCHEMAS)
    parameters: Json = dict(byteranges.PARAMETERS)
    for section in SECTIONS:
        _merge(paths, section.paths, "path")
        _merge(schemas, section.schemas, "schema")
        _merge(parameters, section.parameters, "parameter")
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "tapevault",
            "version": __version__,
            "description": (
                "A self-hosted vault for conversation audio. It speaks three published "
                "recording APIs (Suki, Amigo, Kore.ai), each with its own credential and error "
                "shape, and serves the audio through signed media URLs that honour HTTP Range "
                "(RFC 9110). Every response carries Cache-Control: private, no-store."
            ),
        },
        "servers": [{"url": public_url}],
        "tags": [section.tag for section in SECTIONS],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": parameters,
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
    return copy.deepcopy(document)
