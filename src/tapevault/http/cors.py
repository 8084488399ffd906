"""CORS for browser players and browser API clients.

Media responses must expose Content-Range, Accept-Ranges, Content-Length and ETag, or a
cross-origin ``<audio>`` player cannot seek; preflights must allow the ``Range`` header.
Headers are computed once per origin setting, not per request.
"""

from __future__ import annotations

from collections.abc import Sequence

ALLOW_METHODS = b"GET, HEAD, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = (
    b"range, if-range, if-none-match, if-modified-since, if-match, if-unmodified-since, "
    b"content-type, authorization, auth, sdp_suki_token, sdp_provider_id, x-request-id, "
    b"tus-resumable, upload-length, upload-metadata, upload-offset, x-http-method-override"
)
EXPOSE_HEADERS = (
    b"content-range, accept-ranges, content-length, etag, last-modified, "
    b"content-disposition, retry-after, location, upload-offset, upload-length, "
    b"upload-metadata, upload-expires, tus-resumable, tus-version, tus-extension, tus-max-size, "
    b"tapevault-recording-id"
)


class Cors:
    def __init__(self, origins: Sequence[str]) -> None:
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)
        self._any = [
            (b"access-control-allow-origin", b"*"),
            (b"access-control-expose-headers", EXPOSE_HEADERS),
        ]

    def allowed(self, origin: str | None) -> bool:
        return origin is not None and (self.any_origin or origin in self.origins)

    def response_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        """Headers for an actual (non-preflight) response."""
        if self.any_origin:
            return self._any
        if origin is None or origin not in self.origins:
            return [(b"vary", b"origin")]
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-expose-headers", EXPOSE_HEADERS),
            (b"vary", b"origin"),
        ]

    def preflight_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if not self.allowed(origin):
            return [(b"vary", b"origin")]
        assert origin is not None
        allow_origin = b"*" if self.any_origin else origin.encode("latin-1")
        return [
            (b"access-control-allow-origin", allow_origin),
            (b"access-control-allow-methods", ALLOW_METHODS),
            (b"access-control-allow-headers", ALLOW_HEADERS),
            (b"access-control-max-age", b"600"),
            (b"vary", b"origin"),
        ]
