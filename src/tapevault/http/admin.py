"""The native API: finding sessions, legal holds, retention, deletion and the access log.

Authenticated with a workspace API key (``Authorization: Bearer``), in tapevault's
``{"code", "message"}`` error shape: any key may find and read sessions, the rest needs the
``admin`` role. Answers are shaped in http/native.py (ISO 8601 times). Every change is logged
by the service before it is made (see core/retention.py); a refused change (a deletion under
hold, 409) is logged too.
Ids are looked up inside the key's tenant only: another tenant's id is "not found".

    GET    /api/v1/sessions                       find sessions: filters, keyset pages (any key)
    GET    /api/v1/sessions/{id}                  the session, its hold, recordings, tombstones
    GET    /api/v1/sessions/{id}/recordings       its recordings (any key)
    PUT    /api/v1/sessions/{id}/hold             {"reason": "...", "by": "..."}
    DELETE /api/v1/sessions/{id}/hold             lift the hold; retention resumes
    PUT    /api/v1/sessions/{id}/retention        {"retention": "30d"} (or null: the tenant's)
    PUT    /api/v1/recordings/{id}/retention      the same, for one recording
    DELETE /api/v1/sessions/{id}                  erase the session's audio now (409 under hold)
    DELETE /api/v1/recordings/{id}                erase one recording's audio now
    GET    /api/v1/audit                          the tenant's access log, filtered and paged
    GET    /api/v1/recordings/{id}/access         one recording's access history

A session id may also be a call's SID.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson

from tapevault.auth.workspace import KeyCaller
from tapevault.core import auditproofs, policy
from tapevault.core.access import Action, Actor
from tapevault.core.audit import AuditRecord
from tapevault.core.auditlog import Query
from tapevault.core.catalog import PARAMETERS, page, parse_session_query
from tapevault.core.checkpoints import note_text
from tapevault.core.model import KeyRole
from tapevault.errors import InvalidRequest, NotFound
from tapevault.http.amigo import AmigoDialect
from tapevault.http.asgi import query_pairs
from tapevault.http.context import AppContext
from tapevault.http.endpoint import Endpoint, Handler, Headers, Reply, Request
from tapevault.http.errors import code_message_error
from tapevault.http.native import hold_body, page_body, record_body, recording_body, session_body
from tapevault.http.uploads import read_small
from tapevault.numbers import is_digits

MAX_PAGE = 1000
_MAX_JSON = 16 * 1024


class NativeDialect(AmigoDialect):
    """The workspace API keys of the Amigo dialect, any role, in tapevault's errors: for
    reading sessions and recordings, which member keys may do."""

    def error(self, exc: BaseException) -> tuple[int, Any, Headers]:
        return code_message_error(exc)


class AdminDialect(NativeDialect):
    """The same keys, admin role only: holds, retention, deletion, the access log."""

    def authenticate(self, request: Request) -> KeyCaller:
        caller = super().authenticate(request)
        caller.require(KeyRole.ADMIN)
        return caller


async def json_object(request: Request, limit: int = _MAX_JSON) -> dict[str, Any]:
    """A small JSON object body (an empty body is ``{}``), or 400 saying what is wrong."""
    raw = await read_small(request.receive, limit)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body is not JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def _retention(body: dict[str, Any]) -> int | None:
    """``{"retention": "30d"}``, ``{"retention_seconds": 2592000}``, or null to clear."""
    if "retention_seconds" in body:
        value = body["retention_seconds"]
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InvalidRequest("retention_seconds must be a positive integer or null.")
        return value
    if "retention" not in body:
        raise InvalidRequest('Send {"retention": "30d"} or {"retention": null}.')
    value = body["retention"]
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("retention must be a duration such as 30d, or null.")
    return policy.parse_duration(value)


def parse_time(name: str, value: str | None) -> int | None:
    """Unix seconds or ISO-8601 (with a zone; UTC if none) as Unix milliseconds."""
    if value is None:
        return None
    if is_digits(value, 12):
        return int(value) * 1000
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"{name} must be ISO-8601 or Unix seconds.") from None


ACTIONS = frozenset(a.value for a in Action)
ID_FILTERS = ("session_id", "recording_id")
FILTERS = ("actor", "action", "since", "until", "limit", "cursor")


def parse_query(tenant_id: str, params: dict[str, str], *, ids: bool = True) -> Query:
    """The filters of a log read, each checked: a filter that cannot match (an action outside
    the vocabulary, an empty id) or is not one is a 400 naming it, never an empty page.
    ``ids``: whether ``session_id`` and ``recording_id`` may be given (not when the path
    names the recording)."""
    allowed = (*ID_FILTERS, *FILTERS) if ids else FILTERS
    unknown = sorted(name for name in params if name not in allowed)
    if unknown:
        raise InvalidRequest(
            f"Unknown parameter {unknown[0][:40]!r}; the filters are {', '.join(allowed)}."
        )
    for name, value in params.items():
        if not value:
            raise InvalidRequest(f"{name} must not be empty.")
        if "\x00" in value or len(value) > 200:
            raise InvalidRequest(f"{name} must be text of at most 200 characters, without NUL.")
    action = params.get("action")
    if action is not None and action not in ACTIONS:
        raise InvalidRequest(f"action must be one of: {', '.join(sorted(ACTIONS))}.")
    limit_text = params.get("limit", "100")
    cursor_text = params.get("cursor", "0")
    if not is_digits(limit_text) or not 1 <= int(limit_text) <= MAX_PAGE:
        raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE}.")
    if not is_digits(cursor_text):
        raise InvalidRequest("cursor must be the next_cursor of a previous page.")
    since_ms = parse_time("since", params.get("since"))
    until_ms = parse_time("until", params.get("until"))
    if since_ms is not None and until_ms is not None and until_ms < since_ms:
        raise InvalidRequest("until must not be before since.")
    return Query(
        tenant_id=tenant_id,
        session_id=params.get("session_id"),
        recording_id=params.get("recording_id"),
        actor_id=params.get("actor"),
        action=action,
        since_ms=since_ms,
        until_ms=until_ms,
        after_seq=int(cursor_text),
        limit=int(limit_text),
    )


def _page(records: list[AuditRecord], limit: int) -> dict[str, Any]:
    return {
        "records": [record_body(r) for r in records],
        "next_cursor": str(records[-1].seq) if len(records) == limit else None,
    }


def handlers(ctx: AppContext) -> dict[str, Handler[KeyCaller]]:
    retention = ctx.retention
    dialect = AdminDialect(ctx)

    def actor(request: Request, caller: KeyCaller) -> Actor:
        return dialect.actor(caller, request)

    async def session_view(request: Request, caller: KeyCaller) -> Reply:
        session = await ctx.metadata(retention.session, caller.tenant, request.param("session_id"))
        recordings = await ctx.metadata(
            ctx.vault.sessions.list_recordings, caller.tenant.partner_id, session.session_id
        )
        peaks = await ctx.metadata(ctx.vault.links.with_peaks, recordings)
        return Reply(200, session_body(session, list(recordings), peaks))

    async def hold(request: Request, caller: KeyCaller) -> Reply:
        session_id = request.param("session_id")
        if request.scope["method"] == "DELETE":
            session = await ctx.blocking(
                retention.release, caller.tenant, session_id, actor(request, caller)
            )
            return Reply(200, hold_body(session), recorded=True)
        body = await json_object(request)
        reason, by = body.get("reason"), body.get("by")
        if not isinstance(reason, str) or (by is not None and not isinstance(by, str)):
            raise InvalidRequest('Send {"reason": "...", "by": "..."} (by is optional).')
        session = await ctx.blocking(
            lambda: retention.hold(
                caller.tenant, session_id, reason=reason, by=by, actor=actor(request, caller)
            )
        )
        return Reply(200, hold_body(session), recorded=True)

    async def session_retention(request: Request, caller: KeyCaller) -> Reply:
        seconds = _retention(await json_object(request))
        session = await ctx.blocking(
            retention.set_session_retention,
            caller.tenant,
            request.param("session_id"),
            seconds,
            actor(request, caller),
        )
        recordings = await ctx.metadata(
            ctx.vault.sessions.list_recordings, caller.tenant.partner_id, session.session_id
        )
        return Reply(200, session_body(session, list(recordings)), recorded=True)

    async def recording_retention(request: Request, caller: KeyCaller) -> Reply:
        seconds = _retention(await json_object(request))
        recording = await ctx.blocking(
            retention.set_recording_retention,
            caller.tenant,
            request.param("recording_id"),
            seconds,
            actor(request, caller),
        )
        return Reply(200, recording_body(recording), recorded=True)

    async def delete_session(request: Request, caller: KeyCaller) -> Reply:
        if request.scope["method"] in ("GET", "HEAD"):
            return await session_view(request, caller)
        caller.require(KeyRole.ADMIN)  # reading is any key's; erasing, an admin's
        erased = await ctx.blocking(
            retention.delete_session,
            caller.tenant,
            request.param("session_id"),
            actor(request, caller),
        )
        body = {"deleted": [recording_body(r) for r in erased]}
        return Reply(200, body, recorded=True)

    async def delete_recording(request: Request, caller: KeyCaller) -> Reply:
        erased = await ctx.blocking(
            retention.delete_recording,
            caller.tenant,
            request.param("recording_id"),
            actor(request, caller),
        )
        return Reply(200, recording_body(erased), recorded=True)

    async def listing(request: Request, caller: KeyCaller) -> Reply:
        query = parse_session_query(caller.tenant.partner_id, query_pairs(request.scope))
        found = await ctx.metadata(ctx.vault.sessions.find_sessions, query)
        detail = {"filters": {k: v[:100] for k, v in request.query.items() if k in PARAMETERS}}
        return Reply(200, page_body(page(query, found)), detail=detail)

    async def session_recordings(request: Request, caller: KeyCaller) -> Reply:
        session = await ctx.metadata(retention.session, caller.tenant, request.param("session_id"))
        recordings = await ctx.metadata(
            ctx.vault.sessions.list_recordings, caller.tenant.partner_id, session.session_id
        )
        peaks = await ctx.metadata(ctx.vault.links.with_peaks, recordings)
        body = {
            "session_id": session.session_id,
            "recordings": [recording_body(r, peaks) for r in recordings],
        }
        return Reply(200, body, session_id=session.session_id)

    async def audit(request: Request, caller: KeyCaller) -> Reply:
        query = parse_query(caller.tenant.partner_id, request.query)
        await ctx.settled_audit()
        records = await ctx.blocking(ctx.audit_store.query, query)
        return Reply(200, _page(records, query.limit), detail={"filters": _filters(request)})

    async def access(request: Request, caller: KeyCaller) -> Reply:
        filters = parse_query(caller.tenant.partner_id, request.query, ids=False)
        recording = await ctx.metadata(
            retention.recording, caller.tenant, request.param("recording_id")
        )
        query = replace(
            filters,
            session_id=recording.session_id,
            recording_id=recording.recording_id,
            history=True,
        )
        await ctx.settled_audit()
        records = await ctx.blocking(ctx.audit_store.query, query)
        return Reply(
            200,
            {"recording": recording_body(recording), **_page(records, query.limit)},
            recording_id=recording.recording_id,
        )

    async def proof(request: Request, caller: KeyCaller) -> Reply:
        seq = _whole(request.param("seq"), "the record's seq")
        await ctx.settled_audit()
        found = await ctx.blocking(
            auditproofs.inclusion, ctx.audit_store, seq, caller.tenant.partner_id
        )
        if found is None:
            raise NotFound("No such record in this workspace's access log.")
        return Reply(200, _inclusion_body(found))

    async def consistency(request: Request, caller: KeyCaller) -> Reply:
        unknown = sorted(set(request.query) - {"from", "to"})
        if unknown:
            raise InvalidRequest(f"Unknown parameter: {unknown[0][:40]}.")
        if "from" not in request.query:
            raise InvalidRequest("from (a tree size) is required.")
        old = _whole(request.query["from"], "from")
        new = _whole(request.query["to"], "to") if "to" in request.query else None
        try:
            proved = await ctx.blocking(auditproofs.consistency, ctx.audit_store, old, new)
        except ValueError as exc:
            raise InvalidRequest(f"{exc}.") from None
        cp = proved.checkpoint
        return Reply(
            200,
            {
                "from": proved.old,
                "to": proved.new,
                "proof": [_b64(h) for h in proved.hashes],
                "checkpoint": note_text(cp) if cp.tree_size == proved.new else None,
            },
        )

    return {
        "audit_proof": proof,
        "audit_consistency": consistency,
        "sessions": listing,
        "session_recordings": session_recordings,
        "session": delete_session,
        "hold": hold,
        "session_retention": session_retention,
        "recording_retention": recording_retention,
        "delete_recording": delete_recording,
        "audit": audit,
        "access": access,
    }


def _whole(text: str, name: str) -> int:
    if not is_digits(text) or len(text) > 18 or int(text) < 1:
        raise InvalidRequest(f"{name} must be a whole number from 1.")
    return int(text)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _inclusion_body(found: auditproofs.Inclusion) -> dict[str, Any]:
    """RFC 9162 terms: the leaf is the record's canonical bytes (what its chain hash covers),
    ``proof`` the audit path bottom-up, ``checkpoint`` the C2SP signed note it leads to."""
    cp = found.checkpoint
    body: dict[str, Any] = {
        "status": "included" if cp is not None else "pending",
        "record": record_body(found.record),
        "leaf_index": found.leaf_index,
        "leaf": _b64(found.leaf),
    }
    if cp is None:
        body["reason"] = (
            "The record is integrated but no signed checkpoint covers it yet; ask again "
            "in a few seconds."
        )
        return body
    return {
        **body,
        "tree_size": cp.tree_size,
        "root_hash": _b64(bytes.fromhex(cp.root_hash or "")),
        "proof": [_b64(h) for h in found.hashes],
        "checkpoint": note_text(cp),
    }


def _filters(request: Request) -> dict[str, str]:
    names = ("session_id", "recording_id", "actor", "action", "since", "until", "cursor")
    return {k: request.query[k][:100] for k in names if k in request.query}


def routes(ctx: AppContext) -> list[tuple[str, Endpoint[KeyCaller]]]:
    admin, native = AdminDialect(ctx), NativeDialect(ctx)
    h = handlers(ctx)

    def endpoint(
        methods: list[str],
        name: str,
        action: Action | dict[str, Action],
        dialect: NativeDialect = admin,
    ) -> Endpoint[KeyCaller]:
        return Endpoint(ctx, dialect, methods, h[name], action)

    return [
        ("/api/v1/sessions", endpoint(["GET"], "sessions", Action.SESSION_LIST, native)),
        (
            "/api/v1/sessions/{session_id}/recordings",
            endpoint(["GET"], "session_recordings", Action.SESSION_READ, native),
        ),
        ("/api/v1/audit", endpoint(["GET"], "audit", Action.AUDIT_READ)),
        (
            "/api/v1/audit/consistency",
            endpoint(["GET"], "audit_consistency", Action.AUDIT_READ),
        ),
        ("/api/v1/audit/{seq}/proof", endpoint(["GET"], "audit_proof", Action.AUDIT_READ)),
        (
            "/api/v1/recordings/{recording_id}/access",
            endpoint(["GET"], "access", Action.AUDIT_READ),
        ),
        (
            "/api/v1/recordings/{recording_id}/retention",
            endpoint(["PUT"], "recording_retention", Action.RETENTION_SET),
        ),
        (
            "/api/v1/recordings/{recording_id}",
            endpoint(["DELETE"], "delete_recording", Action.RECORDING_DELETE),
        ),
        (
            "/api/v1/sessions/{session_id}/hold",
            endpoint(
                ["PUT", "DELETE"], "hold", {"PUT": Action.HOLD_SET, "DELETE": Action.HOLD_CLEAR}
            ),
        ),
        (
            "/api/v1/sessions/{session_id}/retention",
            endpoint(["PUT"], "session_retention", Action.RETENTION_SET),
        ),
        (
            "/api/v1/sessions/{session_id}",
            endpoint(
                ["GET", "DELETE"],
                "session",
                {"GET": Action.SESSION_READ, "DELETE": Action.SESSION_DELETE},
                native,
            ),
        ),
    ]
