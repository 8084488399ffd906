"""One shape for every API endpoint of every dialect.

An endpoint checks the method, authenticates the caller with its dialect's credential, runs a
handler that turns the request into service calls and returns a ``Reply``, records the access,
and only then answers. A dialect contributes three things (``Dialect``): how to authenticate, who
the caller is for the access log, and how errors look on its wire. Handlers never see the ASGI
scope's framework objects: they get a plain ``Request``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.clock import now_ms
from tapevault.errors import AuthError, MethodNotAllowed, TapevaultError, Unavailable
from tapevault.http.asgi import (
    Receive,
    Scope,
    Send,
    client_ip,
    note_tenant,
    query_params,
    request_headers,
    scope_request_id,
    send_json,
)
from tapevault.http.context import AppContext
from tapevault.http.wording import say

log = logging.getLogger("tapevault.http")

Headers = list[tuple[bytes, bytes]]
C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class Request:
    scope: Scope
    receive: Receive
    headers: dict[str, str]
    path_params: dict[str, str]
    query: dict[str, str]
    actor: Actor  # who/where before authentication: ip, user agent, request id

    def param(self, name: str) -> str:
        return self.path_params.get(name, "")


@dataclass(slots=True)
class Reply:
    """What a handler did: the answer to send and what the access record should say."""

    status: int
    body: Any = None  # JSON; None for an empty body
    headers: Headers = field(default_factory=list)
    session_id: str | None = None
    recording_id: str | None = None
    mode: str | None = None
    detail: dict[str, Any] | None = None
    action: Action | None = None  # when one endpoint does several things (GET and POST)
    recorded: bool = False  # the service logged it already (before acting): no second record
    # Set by handlers that answer with a stream themselves (audio, a proxied file): the stream
    # records its own access (a playback, before its first byte) and may raise ``Unavailable``
    # only before it sent anything.
    stream: Callable[[Send, Actor], Awaitable[None]] | None = None


class Dialect(Protocol[C]):
    """What makes an API dialect different: its credentials and its error wire format."""

    def authenticate(self, request: Request) -> C:
        """The caller, or ``AuthError``; a read-only metadata call (``AppContext.hot``: on the
        loop when memory holds the answer)."""
        ...

    def actor(self, caller: C, request: Request) -> Actor: ...

    def error(self, exc: BaseException) -> tuple[int, Any, Headers]:
        """(status, JSON body, extra headers) for any exception, in the dialect's shape."""
        ...


Handler = Callable[[Request, C], Awaitable[Reply]]


class Endpoint(Generic[C]):
    """A raw ASGI endpoint: method check, authentication, handler, access record, answer."""

    def __init__(
        self,
        ctx: AppContext,
        dialect: Dialect[C],
        methods: Sequence[str],
        handler: Handler[C],
        action: Action | Mapping[str, Action],
    ) -> None:
        self.ctx = ctx
        self.dialect = dialect
        # HEAD wherever GET is (RFC 9110 §9.3.2): the same answer without its body.
        self.methods = tuple(methods) + (
            ("HEAD",) if "GET" in methods and "HEAD" not in methods else ()
        )
        self.handler = handler
        # What the access log calls a request, by method when one path does several things.
        self.actions = (
            dict(action) if isinstance(action, Mapping) else dict.fromkeys(self.methods, action)
        )
        self.actions.setdefault("HEAD", self.actions.get("GET", next(iter(self.actions.values()))))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = request_headers(scope)
        request = Request(
            scope=scope,
            receive=receive,
            headers=headers,
            path_params=scope.get("path_params", {}),
            query=query_params(scope),
            actor=Actor(
                client_ip=client_ip(scope),
                user_agent=headers.get("user-agent"),
                request_id=scope_request_id(scope),
            ),
        )
        method = scope["method"]
        if method not in self.methods:
            await self._fail(send, request, request.actor, MethodNotAllowed(method, self.methods))
            return
        try:
            caller = await self.ctx.hot(self.dialect.authenticate, request)
        except AuthError as exc:
            await self._fail(send, request, request.actor, exc, Action.AUTH_FAILURE)
            return
        except Exception as exc:  # a database failure while looking the credential up
            await self._fail(send, request, request.actor, exc)
            return
        actor = self.dialect.actor(caller, request)
        note_tenant(scope, actor.partner_id)
        try:
            reply = await self.handler(request, caller)
        except Exception as exc:
            await self._fail(send, request, actor, exc)
            return
        if reply.stream is not None:
            try:
                await reply.stream(send, actor)
            except Unavailable as exc:
                await self._fail(send, request, actor, exc)
            return
        if not reply.recorded:  # else the service logged it already, before acting
            action = reply.action or self._action(request)
            event = self._event(action, actor, reply.status, request, reply)
            if action.durable:
                # The record exists before the answer leaves, or the answer is a 503.
                try:
                    await self.ctx.access_log.commit_async(event)
                except Unavailable as exc:
                    await self._fail(send, request, actor, exc)
                    return
            else:
                self.ctx.access_log.record(event)
        await send_json(
            send,
            reply.status,
            reply.body,
            reply.headers,
            empty=reply.body is None,
            head_only=request.scope["method"] == "HEAD",
        )

    async def _fail(
        self,
        send: Send,
        request: Request,
        actor: Actor,
        exc: BaseException,
        action: Action | None = None,
    ) -> None:
        if not isinstance(exc, TapevaultError):
            log.exception(
                "unexpected error in %s %s", request.scope["method"], request.scope.get("path")
            )
        status, body, extra = self.dialect.error(exc)
        error = say(exc) if isinstance(exc, TapevaultError) else type(exc).__name__
        self.ctx.access_log.record(
            self._event(action or self._action(request), actor, status, request, None, error)
        )
        await send_json(send, status, body, extra)

    def _action(self, request: Request) -> Action:
        return self.actions.get(request.scope["method"]) or next(iter(self.actions.values()))

    def _event(
        self,
        action: Action,
        actor: Actor,
        status: int,
        request: Request,
        reply: Reply | None,
        error: str | None = None,
    ) -> AccessEvent:
        return AccessEvent(
            action=action,
            actor=actor,
            status=status,
            at_ms=now_ms(self.ctx.vault.clock),
            session_id=(reply.session_id if reply else None)
            or request.path_params.get("session_id"),
            recording_id=reply.recording_id if reply else None,
            mode=reply.mode if reply else None,
            error=error,
            detail=reply.detail if reply else None,
        )


def with_caller(base: Actor, **who: Any) -> Actor:
    """The request's anonymous actor with the authenticated identity filled in."""
    return replace(base, **who)
