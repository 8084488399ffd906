"""Resumable uploads: tus 1.0.0 (core, creation, expiration, termination) at /api/v1/uploads.

A standard protocol (https://tus.io/protocols/resumable-upload), so it is described briefly: the
headers each request needs and each answer carries, and the statuses ``http/tus.py`` gives. A
finished upload becomes a recording of the session its Upload-Metadata names, exactly like a plain
Suki upload; errors are the Suki shape.
"""

from __future__ import annotations

from collections.abc import Iterable

from tapevault.http.openapi import suki
from tapevault.http.openapi.common import (
    BINARY,
    SUKI_SCHEME,
    Json,
    Section,
    header,
    header_param,
    operation,
    path_param,
    ref,
    response,
)

TAG = "Uploads (tus)"
_DIGITS = {"type": "string", "pattern": "^[0-9]{1,19}$"}
_RESUMABLE = header("1.0.0", {"type": "string", "const": "1.0.0"}, required=True)
_EXPIRES = header("When the upload is dropped unless continued (IMF-fixdate).", required=True)
_RECORDING = header("The recording the completed upload became.")
_DISCOVERY = {
    "Tus-Resumable": _RESUMABLE,
    "Tus-Version": header("1.0.0", required=True),
    "Tus-Extension": header("creation,expiration,termination", required=True),
    "Tus-Max-Size": header("The largest Upload-Length taken, in bytes.", required=True),
}


def _error(description: str, schema: str = "SukiError", extra: Json | None = None) -> Json:
    return response(
        description, ref(schema), headers={"Tus-Resumable": _RESUMABLE, **(extra or {})}
    )


_ERRORS = {
    "400": _error("A header is missing or malformed, or the finished upload is not audio."),
    "401": _error("Missing or invalid sdp_suki_token."),
    "404": _error("No such upload (or another partner's), or no such session."),
    "405": _error("X-HTTP-Method-Override names a method this path does not take."),
    "408": _error("The body stalled for a minute; the bytes received are kept: HEAD, resume."),
    "409": _error("Upload-Offset is not the upload's offset, or the session has ended."),
    "410": _error("The upload expired.", "SukiGoneError"),
    "412": _error(
        "Tus-Resumable is not 1.0.0.", extra={"Tus-Version": header("1.0.0", required=True)}
    ),
    "413": _error("Over Tus-Max-Size, or past Upload-Length."),
    "415": _error("Not application/offset+octet-stream, or the upload is not audio."),
    "423": _error("Another PATCH is writing this upload; retry."),
    "500": _error("Service failure; the bytes are kept and HEAD retries the completion."),
    "507": _error(
        "The server's disk is full (HEAD, then resume later; bytes past Upload-Offset are not "
        "kept) or the partner's storage quota is used up."
    ),
}
_TUS_RESUMABLE = header_param(
    "Tus-Resumable", "The protocol version.", {"type": "string", "const": "1.0.0"}, required=True
)
_CREDENTIALS = [suki.TOKEN, suki.PROVIDER, _TUS_RESUMABLE]
_UPLOAD_ID = path_param("upload_id", "The upload, from the creation's Location.")


def _op(
    method: str,
    summary: str,
    ok: dict[str, Json],
    errors: str,
    parameters: Iterable[Json] = (),
    request_body: Json | None = None,
) -> Json:
    """A tus operation; ``errors`` lists the error statuses it can answer."""
    return operation(
        tag=TAG,
        operation_id=f"tus{method}",
        summary=summary,
        responses={**ok, **{status: _ERRORS[status] for status in errors.split()}},
        parameters=[*_CREDENTIALS, *parameters],
        request_body=request_body,
        security=SUKI_SCHEME,
    )


def _options(operation_id: str, parameters: Iterable[Json] = ()) -> Json:
    return operation(
        tag=TAG,
        operation_id=operation_id,
        summary="Discover the server's tus version, extensions and size limit",
        parameters=parameters,
        responses={
            "204": response("The server's capabilities.", headers=_DISCOVERY),
            "405": _ERRORS["405"],
        },
    )


def paths() -> Json:
    return {
        "/api/v1/uploads": {
            "post": _op(
                "Create",
                "Create an upload",
                {
                    "201": response(
                        "Created; PATCH the bytes to Location.",
                        headers={
                            "Tus-Resumable": _RESUMABLE,
                            "Location": header("The upload's absolute URL.", required=True),
                            "Upload-Expires": _EXPIRES,
                        },
                    )
                },
                "400 401 404 405 409 412 413 500 507",
                [
                    header_param(
                        "Upload-Length", "The whole size in bytes.", _DIGITS, required=True
                    ),
                    header_param(
                        "Upload-Metadata",
                        "key base64value pairs: session_id (required), filename, filetype.",
                        {"type": "string"},
                        required=True,
                    ),
                ],
            ),
            "options": _options("tusOptions"),
        },
        "/api/v1/uploads/{upload_id}": {
            "head": _op(
                "Offset",
                "The upload's offset (also retries a completion that failed)",
                {
                    "200": response(
                        "Where to resume.",
                        headers={
                            "Tus-Resumable": _RESUMABLE,
                            "Upload-Offset": header("Bytes stored.", required=True),
                            "Upload-Length": header("The whole size.", required=True),
                            "Upload-Expires": _EXPIRES,
                            "Upload-Metadata": header("As given at creation."),
                            "Tapevault-Recording-Id": _RECORDING,
                        },
                    )
                },
                "400 401 404 405 409 410 412 415 500 507",
                [_UPLOAD_ID],
            ),
            "patch": _op(
                "Append",
                "Append bytes at Upload-Offset",
                {
                    "204": response(
                        "Stored and synced; the last byte completes the upload.",
                        headers={
                            "Tus-Resumable": _RESUMABLE,
                            "Upload-Offset": header("Bytes stored now.", required=True),
                            "Upload-Expires": _EXPIRES,
                            "Tapevault-Recording-Id": _RECORDING,
                        },
                    )
                },
                "400 401 404 405 408 409 410 412 413 415 423 500 507",
                [
                    _UPLOAD_ID,
                    header_param(
                        "Upload-Offset", "The upload's current offset.", _DIGITS, required=True
                    ),
                ],
                request_body={
                    "required": True,
                    "content": {"application/offset+octet-stream": {"schema": BINARY}},
                },
            ),
            "delete": _op(
                "Terminate",
                "Terminate the upload and drop its bytes",
                {"204": response("Gone.", headers={"Tus-Resumable": _RESUMABLE})},
                "401 404 405 412 423 500",
                [_UPLOAD_ID],
            ),
            "options": _options("tusOptionsUpload", [_UPLOAD_ID]),
        },
    }


SECTION = Section(
    tag={
        "name": TAG,
        "description": (
            "Resumable uploads, tus 1.0.0 with the creation, expiration and termination "
            "extensions. Tus-Resumable: 1.0.0 on every request but OPTIONS; "
            "X-HTTP-Method-Override replaces the method."
        ),
    },
    paths=paths(),
)
