"""Helpers for the access log's signer tests: a node's process that signs a few records, and a
statement run straight against the deployment's database (as someone who can write it would)."""

from __future__ import annotations

from sqlalchemy import text

from tapevault.config import Settings
from tapevault.core.access import AccessEvent, Action, Actor
from tapevault.core.clock import FixedClock
from tapevault.runtime import open_runtime


def sign_records(settings: Settings, clock: FixedClock, count: int) -> None:
    """One process of the node: ``count`` records, then stopped (its integrator signs them)."""
    rt = open_runtime(settings, clock=clock)
    try:
        for i in range(count):
            rt.context.access_log.commit(
                AccessEvent(
                    action=Action.URLS_ISSUE,
                    actor=Actor(partner_id="p1", kind="suki_token", token_id=f"jti-{i}"),
                    status=200,
                    at_ms=int(clock.now() * 1000),
                    session_id="s1",
                )
            )
            clock.advance(1)
    finally:
        rt.close()


def sql(settings: Settings, statement: str, **params: object) -> None:
    rt = open_runtime(settings, run_migrations=False)
    try:
        with rt.engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        rt.close()
