"""Building blocks of the OpenAPI document: references, parameters, responses, operations.

The document is written by hand (the endpoints are raw ASGI: there are no framework models to
generate it from), so whatever repeats across operations is made here once: a parameter, a
response with its headers, an operation with its tag and credentials, the HEAD twin of a GET.
Each dialect module describes its operations with these and returns a ``Section``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

JSON = "application/json"
BINARY: Json = {"type": "string", "format": "binary"}
UUID: Json = {"type": "string", "format": "uuid"}

# The credentials, by security scheme name (components.securitySchemes in the package root).
SUKI_SCHEME = "sdp_suki_token"
BEARER_SCHEME = "BearerAuth"
KORE_SCHEME = "KoreAuth"


@dataclass(frozen=True)
class Section:
    """One dialect's share of the document: its tag, paths and named components."""

    tag: Json
    paths: Json
    schemas: Json = field(default_factory=dict)
    parameters: Json = field(default_factory=dict)


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def parameter_ref(name: str) -> Json:
    return {"$ref": f"#/components/parameters/{name}"}


def nullable(schema: Json) -> Json:
    """OpenAPI 3.1 spelling of "this or null" (``nullable`` is gone since 3.1)."""
    return {"anyOf": [schema, {"type": "null"}]}


def _param(where: str, name: str, description: str, schema: Json, required: bool) -> Json:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": schema,
    }


def path_param(name: str, description: str, schema: Json | None = None) -> Json:
    return _param("path", name, description, schema or {"type": "string"}, True)


def query_param(name: str, description: str, schema: Json, *, required: bool = False) -> Json:
    return _param("query", name, description, schema, required)


def header_param(name: str, description: str, schema: Json, *, required: bool = False) -> Json:
    return _param("header", name, description, schema, required)


def header(description: str, schema: Json | None = None, *, required: bool = False) -> Json:
    """A response header; ``required`` only when every response of that status carries it."""
    return {
        "description": description,
        "required": required,
        "schema": schema or {"type": "string"},
    }


RETRY_AFTER = header(
    "Seconds to wait before asking again; sent while the audio is still being prepared.",
    {"type": "integer", "minimum": 0},
)


def response(
    description: str,
    schema: Json | None = None,
    *,
    headers: Mapping[str, Json] | None = None,
    example: Any = None,
    content: Json | None = None,
) -> Json:
    """A response: a JSON ``schema`` (with an optional example), explicit ``content``, or none."""
    answer: Json = {"description": description}
    if headers:
        answer["headers"] = dict(headers)
    if content is not None:
        answer["content"] = content
    elif schema is not None:
        media: Json = {"schema": schema}
        if example is not None:
            media["example"] = example
        answer["content"] = {JSON: media}
    return answer


def with_headers(answer: Json, **headers: Json) -> Json:
    """The same response with more headers (a shared error response plus, say, Retry-After)."""
    return {**answer, "headers": {**answer.get("headers", {}), **headers}}


def operation(
    *,
    tag: str,
    operation_id: str,
    summary: str,
    responses: Mapping[str, Json],
    description: str | None = None,
    parameters: Iterable[Json] = (),
    request_body: Json | None = None,
    security: str | None = None,
) -> Json:
    """One operation; ``security`` names the one credential it takes (None: no credential)."""
    op: Json = {"tags": [tag], "summary": summary, "operationId": operation_id}
    if description:
        op["description"] = description
    params = list(parameters)
    if params:
        op["parameters"] = params
    if request_body is not None:
        op["requestBody"] = request_body
    op["responses"] = dict(sorted(responses.items()))
    if security:
        op["security"] = [{security: []}]
    return op


def head_of(get: Json, operation_id: str, summary: str) -> Json:
    """The HEAD twin of a GET operation.

    HEAD answers with the status and header fields the GET would (RFC 9110 §9.3.2) and no body;
    its Content-Type is still the GET's, so the content entries stay to say which one.
    """
    return {**get, "operationId": operation_id, "summary": summary}


def binary_body(media_types: Iterable[str], description: str, *, required: bool = True) -> Json:
    return {
        "required": required,
        "description": description,
        "content": {media_type: {"schema": BINARY} for media_type in sorted(media_types)},
    }


FORM_FILE: Json = {
    "type": "object",
    "description": "A form (curl -F file=@visit.wav) whose one part is the audio file.",
    "properties": {"file": BINARY},
    "required": ["file"],
    "additionalProperties": False,
}


def upload_body(media_types: Iterable[str], description: str) -> Json:
    """An audio upload: the file as the whole body in one of ``media_types``, or as the one
    file part of a ``multipart/form-data`` form (``tapevault.http.multipart``)."""
    body = binary_body(media_types, description)
    body["content"]["multipart/form-data"] = {"schema": FORM_FILE}
    return body
