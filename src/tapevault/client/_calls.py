"""Each API operation as data: the request to send and how to read the answer. The sync and
async clients run the same ``Call`` objects, so the dialects are written once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from tapevault.client._http import retry_after
from tapevault.client.errors import ClientError, ProtocolError
from tapevault.client.models import (
    AuditPage,
    CallMetadata,
    CallUrls,
    MergedRecording,
    NativeSession,
    RecordingUrl,
    Session,
)

T = TypeVar("T")
_AUDIO_TYPES = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".webm": "audio/webm",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
}


def audio_type(path: Path | None) -> str:
    """The Content-Type to upload a file with (the server checks the bytes anyway)."""
    return _AUDIO_TYPES.get(path.suffix.lower(), "audio/wav") if path else "audio/wav"


def seg(value: str) -> str:
    """An id as one path segment (a ``/`` in it cannot reach another route)."""
    return quote(value, safe="")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ProtocolError(f"{response.request.url.path}: the answer is not JSON") from None


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None
    json: Any = None
    body: bytes | Path | None = None


@dataclass(frozen=True)
class Credentials:
    """Whichever credentials the caller has; each dialect asks for its own."""

    suki_token: str | None = None
    api_key: str | None = None
    workspace_id: str | None = None
    kore_token: str | None = None
    bot_id: str | None = None

    def suki(self) -> dict[str, str]:
        if not self.suki_token:
            raise ClientError("this needs a Suki token (suki_token=...)")
        return {"sdp_suki_token": self.suki_token}

    def bearer(self) -> dict[str, str]:
        if not self.api_key:
            raise ClientError("this needs an API key (api_key=...)")
        return {"authorization": f"Bearer {self.api_key}"}

    def workspace(self) -> str:
        if not self.workspace_id:
            raise ClientError("this needs the workspace id (workspace_id=...)")
        return seg(self.workspace_id)

    def kore(self) -> tuple[dict[str, str], str]:
        if not self.kore_token or not self.bot_id:
            raise ClientError("this needs a Kore JWT and bot id (kore_token=..., bot_id=...)")
        return {"auth": self.kore_token}, seg(self.bot_id)


class Calls:
    """Every operation the client knows, as ``Call`` values."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds

    # Suki (sdp_suki_token)
    def create_session(self, form_filling: bool = False) -> Call[str]:
        kind = "form-filling" if form_filling else "ambient"
        return Call(
            "POST",
            f"/api/v1/{kind}/session/create",
            lambda r: str(_json(r)["ambient_session_id"]),
            self.creds.suki(),
        )

    def upload(self, session_id: str, audio: bytes | Path, content_type: str | None) -> Call[str]:
        path = audio if isinstance(audio, Path) else None
        headers = {**self.creds.suki(), "content-type": content_type or audio_type(path)}
        return Call(
            "POST",
            f"/api/v1/ambient/session/{seg(session_id)}/audio",
            lambda r: str(_json(r)["recording_id"]),
            headers,
            body=audio,
        )

    def end(self, session_id: str) -> Call[Session]:
        return Call(
            "POST",
            f"/api/v1/ambient/session/{seg(session_id)}/end",
            lambda r: Session.from_wire(_json(r)),
            self.creds.suki(),
        )

    def status(self, session_id: str) -> Call[Session]:
        return Call(
            "GET",
            f"/api/v1/ambient/session/{seg(session_id)}",
            lambda r: Session.from_wire(_json(r)),
            self.creds.suki(),
        )

    def recording_urls(self, session_id: str, download: bool = False) -> Call[list[RecordingUrl]]:
        return Call(
            "GET",
            f"/api/v1/ambient/session/{seg(session_id)}/recording",
            lambda r: RecordingUrl.many_from_wire(_json(r)),
            self.creds.suki(),
            params={"download": "true"} if download else None,
        )

    # Amigo (Bearer API key, workspace)
    def call_urls(self, call_sid: str) -> Call[CallUrls]:
        return Call(
            "GET",
            f"/v1/{self.creds.workspace()}/recordings/{seg(call_sid)}/urls",
            lambda r: CallUrls.from_wire(_json(r)),
            self.creds.bearer(),
        )

    def call_metadata(self, call_sid: str) -> Call[CallMetadata]:
        return Call(
            "GET",
            f"/v1/{self.creds.workspace()}/recordings/{seg(call_sid)}/metadata",
            lambda r: CallMetadata.from_wire(_json(r)),
            self.creds.bearer(),
        )

    def call_download_path(self, call_sid: str, filename: str) -> str:
        return f"/v1/{self.creds.workspace()}/recordings/{seg(call_sid)}/download/{seg(filename)}"

    # Kore (auth JWT)
    def merged(self, session_id: str, user_id: str | None = None) -> Call[MergedRecording]:
        headers, bot = self.creds.kore()
        params = {"sessionId": session_id, **({"userId": user_id} if user_id else {})}
        return Call(
            "GET",
            f"/api/public/bot/{bot}/v2/recordings",
            lambda r: MergedRecording.from_wire(_json(r), retry_after(r)),
            headers,
            params=params,
        )

    # Native (admin API key)
    def session(self, session_id: str) -> Call[NativeSession]:
        return Call(
            "GET",
            f"/api/v1/sessions/{seg(session_id)}",
            lambda r: NativeSession.from_wire(_json(r)),
            self.creds.bearer(),
        )

    def hold(self, session_id: str, reason: str, by: str | None = None) -> Call[Any]:
        return Call(
            "PUT",
            f"/api/v1/sessions/{seg(session_id)}/hold",
            _json,
            self.creds.bearer(),
            json={"reason": reason, "by": by},
        )

    def release(self, session_id: str) -> Call[Any]:
        return Call(
            "DELETE", f"/api/v1/sessions/{seg(session_id)}/hold", _json, self.creds.bearer()
        )

    def set_retention(self, session_id: str, retention: str | None) -> Call[NativeSession]:
        return Call(
            "PUT",
            f"/api/v1/sessions/{seg(session_id)}/retention",
            lambda r: NativeSession.from_wire(_json(r)),
            self.creds.bearer(),
            json={"retention": retention},
        )

    def delete(self, session_id: str) -> Call[Any]:
        return Call("DELETE", f"/api/v1/sessions/{seg(session_id)}", _json, self.creds.bearer())

    def audit(self, cursor: str | None = None, limit: int = 100, **filters: str) -> Call[AuditPage]:
        params = {**filters, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        return Call(
            "GET",
            "/api/v1/audit",
            lambda r: AuditPage.from_wire(_json(r)),
            self.creds.bearer(),
            params=params,
        )
