"""The media gateway behind every ``presigned_url``: ``GET|HEAD /media/{recording_id}.wav``.

Raw ASGI on purpose (the hot path of every playback): verify the URL's signature and expiry, find
the recording inside the signing partner, then hand the bytes to ``send_representation``, which
owns Range, conditional requests and multipart. Errors are JSON, and say what to do next.
"""

from __future__ import annotations

import logging
from typing import Any

from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.clock import now_ms
from tapevault.core.signing import UrlMode
from tapevault.errors import Gone, NotFound, TapevaultError, UrlRejected
from tapevault.http.asgi import (
    Receive,
    Scope,
    Send,
    client_ip,
    query_params,
    request_headers,
    request_id,
)
from tapevault.http.asgi import send_json as _send_json
from tapevault.http.context import AppContext
from tapevault.http.cors import Cors
from tapevault.http.ranged import Representation, send_representation

log = logging.getLogger("tapevault.media")

PREFIX = "/media/"
SUFFIX = ".wav"
ALLOW = (b"allow", b"GET, HEAD, OPTIONS")


def media_error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The one place where gateway errors become HTTP answers."""
    match exc:
        case UrlRejected(reason=reason):
            return 403, {"code": 403, "error": f"url_{reason}", "message": exc.message}
        case Gone(detail=detail):
            return 410, {
                "code": 410,
                "error": f"recording_{detail.reason}",
                "message": exc.message,
                "reason": detail.reason,
                "at": detail.at,
            }
        case NotFound():
            return 404, {"code": 404, "error": "not_found", "message": exc.message}
        case _:
            return 500, {"code": 500, "error": "internal", "message": "An internal error occurred."}


class MediaGateway:
    def __init__(self, ctx: AppContext, cors: Cors) -> None:
        self.ctx = ctx
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        headers = request_headers(scope)
        cors_headers = self.cors.response_headers(headers.get("origin"))
        if method not in ("GET", "HEAD"):
            await _send_json(
                send,
                405,
                {"code": 405, "error": "method_not_allowed", "message": f"{method} not allowed."},
                [ALLOW, *cors_headers],
            )
            return
        path: str = scope["path"]
        recording_id = path[len(PREFIX) : -len(SUFFIX)] if path.endswith(SUFFIX) else ""
        head = method == "HEAD"
        try:
            if not recording_id or "/" in recording_id:
                raise NotFound("No such media.")
            access = await self.ctx.metadata(
                self.ctx.vault.authorize_media, recording_id, query_params(scope)
            )
        except Exception as exc:
            if not isinstance(exc, TapevaultError):
                log.exception("unexpected error authorizing %s", path)
            status, body = media_error(exc)
            self._record(scope, headers, recording_id or None, None, status, [], 0, body["error"])
            await _send_json(send, status, body, cors_headers, head_only=head)
            return
        recording = access.recording
        extra = list(cors_headers)
        if access.grant.mode is UrlMode.DOWNLOAD:
            filename = f"{recording.session_id}-{recording.sequence_number}.wav"
            extra.append((b"content-disposition", f'attachment; filename="{filename}"'.encode()))
        store = self.ctx.vault.store
        key = recording.storage_key
        served = await send_representation(
            send,
            method=method,
            headers=headers,
            rep=Representation(
                size=recording.size_bytes,
                etag=recording.etag,
                last_modified=recording.created_ms // 1000,
                content_type="audio/wav",
            ),
            read=lambda offset, length: store.read_range(key, offset, length),
            extra_headers=extra,
        )
        self._record(
            scope,
            headers,
            recording.recording_id,
            access.grant,
            served.status,
            served.ranges,
            served.bytes_sent,
            None,
        )

    def _record(
        self,
        scope: Scope,
        headers: dict[str, str],
        recording_id: str | None,
        grant: Any,
        status: int,
        ranges: list[tuple[int, int]],
        bytes_sent: int,
        error: str | None,
    ) -> None:
        self.ctx.access_log.record(
            AccessEvent(
                action=Action.MEDIA_READ,
                actor=Actor(
                    partner_id=grant.partner_id if grant else None,
                    client_ip=client_ip(scope),
                    user_agent=headers.get("user-agent"),
                    request_id=request_id(headers),
                ),
                status=status,
                at_ms=now_ms(self.ctx.vault.clock),
                recording_id=recording_id,
                mode=grant.mode.name.lower() if grant else None,
                ranges=ranges,
                bytes_sent=bytes_sent,
                error=error,
            )
        )
