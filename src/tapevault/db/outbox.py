"""The webhook outbox: events written inside the transaction of the change they report.

``write_events`` runs on the caller's connection, inside its transaction, with the session's
row already locked (PostgreSQL) or the database's write lock held (SQLite): so the event
commits or rolls back with its change, a session's events are numbered and positioned in the
order their changes committed, and each is fanned out to the delivery rows of the endpoints
subscribed at that moment (an endpoint registered later never receives history).
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from sqlalchemy import ColumnElement, Connection, func, insert, select

from tapevault.core.events import Event
from tapevault.core.webhooks import DeliveryStatus, new_delivery_id, new_event_id
from tapevault.db.schema import webhook_deliveries, webhook_endpoints, webhook_events


def write_events(conn: Connection, events: Iterable[Event | None], now: ColumnElement[int]) -> int:
    """Store each event (None ones skipped) and its deliveries; ``now`` is the database's
    clock, when deliveries fall due. Returns how many deliveries were queued. A tenant's
    endpoints are read once per call: one transaction, one moment (a purge batch's events
    would otherwise read them once per recording)."""
    queued = 0
    subscribed: dict[str, list[tuple[str, str]]] = {}  # tenant: (endpoint id, event types)
    for event in events:
        if event is None:
            continue
        last = conn.execute(
            select(func.max(webhook_events.c.sequence)).where(
                webhook_events.c.subject == event.subject
            )
        ).scalar()
        sequence = 1 + int(last or 0)
        body = orjson.dumps(event.payload(sequence)).decode()
        position = conn.execute(
            insert(webhook_events)
            .values(
                event_id=new_event_id(),
                partner_id=event.partner_id,
                type=event.type.value,
                session_id=event.session_id,
                recording_id=event.recording_id,
                subject=event.subject,
                sequence=sequence,
                payload=body,
                created_ms=event.at_ms,
            )
            .returning(webhook_events.c.position)
        ).scalar_one()
        if event.partner_id not in subscribed:
            rows = conn.execute(
                select(webhook_endpoints.c.endpoint_id, webhook_endpoints.c.event_types).where(
                    webhook_endpoints.c.partner_id == event.partner_id,
                    webhook_endpoints.c.disabled_ms.is_(None),
                )
            )
            subscribed[event.partner_id] = [(endpoint_id, types) for endpoint_id, types in rows]
        for endpoint_id, types in subscribed[event.partner_id]:
            if event.type.value not in types.split():
                continue
            conn.execute(
                insert(webhook_deliveries).values(
                    delivery_id=new_delivery_id(),
                    endpoint_id=endpoint_id,
                    event_position=position,
                    partner_id=event.partner_id,
                    session_id=event.session_id,
                    status=DeliveryStatus.PENDING.value,
                    attempts=0,
                    next_attempt_ms=now,
                    created_ms=now,  # the log's order: one clock for it and for replays
                )
            )
            queued += 1
    return queued
