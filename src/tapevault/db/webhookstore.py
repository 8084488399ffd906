"""Webhook endpoints and deliveries in the database (the outbox's writes are db/outbox.py).

Deliveries are leased like jobs, by the database's clock (every worker reads the same one): a
conditional UPDATE claims a due delivery whose lease is free or lapsed, so two workers never send
one at once and a killed worker's delivery is sent again once its lease lapses (or at once, when
a restarted worker finds its previous process gone). A delivery is due only when no earlier event
of the same session is still pending for the same endpoint: receivers get a session's events in
the order they happened, and one receiver that is down holds up no other.

Every read of the API side is scoped by tenant in the SQL itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import aliased

from tapevault.core.webhooks import (
    Delivery,
    DeliveryStatus,
    Endpoint,
    new_delivery_id,
)
from tapevault.db.changes import CHANNEL as CHANGES_CHANNEL
from tapevault.db.engine import database_now_ms
from tapevault.db.schema import cache_epoch, webhook_deliveries, webhook_endpoints, webhook_events

_d = webhook_deliveries
_e = webhook_events
_PENDING = DeliveryStatus.PENDING.value


@dataclass(frozen=True, slots=True)
class Leased:
    """A delivery claimed for sending, with its endpoint as it was when claimed."""

    delivery: Delivery
    endpoint: Endpoint


class SqlWebhookStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _now(self) -> ColumnElement[int]:
        """The database's clock, as the repository's leases read it."""
        return database_now_ms(self.engine)

    def database_now_ms(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(self._now())).scalar_one())

    # endpoints ------------------------------------------------------------------------------

    def count_endpoints(self, partner_id: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        webhook_endpoints.c.partner_id == partner_id,
                        webhook_endpoints.c.deleted_ms.is_(None),
                    )
                ).scalar_one()
            )

    def add_endpoint(self, endpoint: Endpoint) -> None:
        """Also moves the cache epoch (and notifies, on PostgreSQL) in the same transaction: the
        change feed of every process then wakes its idle webhook dispatcher (``any_enabled``)."""
        values = _endpoint_values(endpoint)
        with self.engine.begin() as conn:
            conn.execute(insert(webhook_endpoints).values(**values))
            conn.execute(
                update(cache_epoch)
                .where(cache_epoch.c.id == 1)
                .values(epoch=cache_epoch.c.epoch + 1)
            )
            if self.engine.dialect.name == "postgresql":
                conn.execute(select(func.pg_notify(CHANGES_CHANNEL, "")))

    def any_enabled(self) -> bool:
        """Whether any tenant has an enabled endpoint (one index probe): with none, nothing can
        be due, and the dispatcher sleeps until an endpoint is added."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(webhook_endpoints.c.endpoint_id)
                .where(webhook_endpoints.c.disabled_ms.is_(None))
                .limit(1)
            ).first()
        return found is not None

    def get_endpoint(self, partner_id: str, endpoint_id: str) -> Endpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(webhook_endpoints).where(
                    webhook_endpoints.c.endpoint_id == endpoint_id,
                    webhook_endpoints.c.partner_id == partner_id,
                    webhook_endpoints.c.deleted_ms.is_(None),
                )
            ).first()
        return None if row is None else _endpoint(row._mapping)

    def list_endpoints(self, partner_id: str) -> Sequence[Endpoint]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(webhook_endpoints)
                .where(
                    webhook_endpoints.c.partner_id == partner_id,
                    webhook_endpoints.c.deleted_ms.is_(None),
                )
                .order_by(webhook_endpoints.c.created_ms, webhook_endpoints.c.endpoint_id)
            ).all()
        return [_endpoint(row._mapping) for row in rows]

    def remove_endpoint(self, partner_id: str, endpoint_id: str) -> bool:
        """The endpoint goes with its delivery log (the events stay: others may share them).

        Its row stays, disabled and without its secrets: a change committing meanwhile may
        have fanned an event out to it, and deleting the row would fail that change's
        transaction (the delivery's foreign key) instead of leaving one unsendable row."""
        ep = webhook_endpoints.c
        now = self._now()
        with self.engine.begin() as conn:
            removed = conn.execute(
                update(webhook_endpoints)
                .where(
                    ep.endpoint_id == endpoint_id,
                    ep.partner_id == partner_id,
                    ep.deleted_ms.is_(None),
                )
                .values(
                    deleted_ms=now,
                    disabled_ms=func.coalesce(ep.disabled_ms, now),
                    disabled_reason=func.coalesce(ep.disabled_reason, "removed"),
                    secret="",
                    previous_secret=None,
                    previous_until_ms=None,
                )
            ).rowcount
            if removed != 1:
                return False
            conn.execute(delete(_d).where(_d.c.endpoint_id == endpoint_id))
        return True

    def rotate_secret(
        self, partner_id: str, endpoint_id: str, old: str, new: str, previous_until_ms: int
    ) -> bool:
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(webhook_endpoints)
                .where(
                    webhook_endpoints.c.endpoint_id == endpoint_id,
                    webhook_endpoints.c.partner_id == partner_id,
                    webhook_endpoints.c.secret == old,
                )
                .values(secret=new, previous_secret=old, previous_until_ms=previous_until_ms)
            ).rowcount
        return changed == 1

    def disable(self, endpoint_id: str, reason: str) -> None:
        """Stop sending to an endpoint (its receiver answered 410): what is pending for it is
        cancelled, and new events no longer fan out to it."""
        with self.engine.begin() as conn:
            conn.execute(
                update(webhook_endpoints)
                .where(
                    webhook_endpoints.c.endpoint_id == endpoint_id,
                    webhook_endpoints.c.disabled_ms.is_(None),
                )
                .values(disabled_ms=self._now(), disabled_reason=reason[:300])
            )
            conn.execute(
                update(_d)
                .where(_d.c.endpoint_id == endpoint_id, _d.c.status == _PENDING)
                .values(
                    status=DeliveryStatus.CANCELLED.value,
                    last_error="endpoint disabled",
                    lease_owner=None,
                    lease_expires_ms=None,
                )
            )

    # deliveries: the API side -----------------------------------------------------------------

    def list_deliveries(
        self, partner_id: str, endpoint_id: str, limit: int, after: str | None
    ) -> Sequence[Delivery]:
        conditions: list[ColumnElement[bool]] = [
            _d.c.endpoint_id == endpoint_id,
            _d.c.partner_id == partner_id,
        ]
        with self.engine.connect() as conn:
            if after is not None:
                mark = conn.execute(
                    select(_d.c.created_ms).where(
                        _d.c.delivery_id == after,
                        _d.c.endpoint_id == endpoint_id,
                        _d.c.partner_id == partner_id,
                    )
                ).first()
                if mark is None:
                    return []
                conditions.append(
                    or_(
                        _d.c.created_ms < mark[0],
                        and_(_d.c.created_ms == mark[0], _d.c.delivery_id < after),
                    )
                )
            rows = conn.execute(
                _delivery_select()
                .where(*conditions)
                .order_by(_d.c.created_ms.desc(), _d.c.delivery_id.desc())
                .limit(limit)
            ).all()
        return [_delivery(row._mapping) for row in rows]

    def get_delivery(self, partner_id: str, delivery_id: str) -> Delivery | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                _delivery_select().where(
                    _d.c.delivery_id == delivery_id, _d.c.partner_id == partner_id
                )
            ).first()
        return None if row is None else _delivery(row._mapping)

    def replay(self, partner_id: str, endpoint_id: str, delivery_id: str) -> Delivery | None:
        with self.engine.begin() as conn:
            row = conn.execute(
                select(_d.c.event_position, _d.c.session_id).where(
                    _d.c.delivery_id == delivery_id,
                    _d.c.endpoint_id == endpoint_id,
                    _d.c.partner_id == partner_id,
                )
            ).first()
            if row is None:
                return None
            already = conn.execute(
                select(_d.c.delivery_id).where(
                    _d.c.endpoint_id == endpoint_id,
                    _d.c.event_position == row.event_position,
                    _d.c.status == _PENDING,
                )
            ).first()
            if already is not None:
                # Replaying what is still on its way would only send it twice: that one is it.
                return self.get_delivery(partner_id, already[0])
            new_id = new_delivery_id()
            conn.execute(
                insert(_d).values(
                    delivery_id=new_id,
                    endpoint_id=endpoint_id,
                    event_position=row.event_position,
                    partner_id=partner_id,
                    session_id=row.session_id,
                    status=_PENDING,
                    attempts=0,
                    next_attempt_ms=self._now(),
                    created_ms=self._now(),
                )
            )
        return self.get_delivery(partner_id, new_id)

    # deliveries: the worker side ----------------------------------------------------------------

    def lease_delivery(self, owner: str, now_ms: int, lease_ms: int) -> Leased | None:
        """Claim one due delivery whose lease is free or lapsed and whose session has no
        earlier event pending for the same endpoint; exactly one caller wins a race."""
        free = or_(_d.c.lease_expires_ms.is_(None), _d.c.lease_expires_ms < now_ms)
        earlier = aliased(_d)
        in_order = ~exists().where(
            earlier.c.endpoint_id == _d.c.endpoint_id,
            earlier.c.session_id == _d.c.session_id,
            earlier.c.status == _PENDING,
            earlier.c.event_position < _d.c.event_position,
        )
        enabled = exists().where(
            webhook_endpoints.c.endpoint_id == _d.c.endpoint_id,
            webhook_endpoints.c.disabled_ms.is_(None),
        )
        due = [_d.c.status == _PENDING, _d.c.next_attempt_ms <= now_ms, free, in_order, enabled]
        with self.engine.connect() as conn:
            candidates = conn.execute(
                select(_d.c.delivery_id).where(*due).order_by(_d.c.next_attempt_ms).limit(8)
            ).all()
        for (delivery_id,) in candidates:
            with self.engine.begin() as conn:
                claimed = conn.execute(
                    update(_d)
                    .where(_d.c.delivery_id == delivery_id, *due)
                    .values(lease_owner=owner, lease_expires_ms=now_ms + lease_ms)
                ).rowcount
                if claimed != 1:
                    continue
                row = conn.execute(
                    _delivery_select().where(_d.c.delivery_id == delivery_id)
                ).first()
                assert row is not None  # claimed in this transaction
                delivery = _delivery(row._mapping)
                endpoint = conn.execute(
                    select(webhook_endpoints).where(
                        webhook_endpoints.c.endpoint_id == delivery.endpoint_id
                    )
                ).first()
                assert endpoint is not None  # the claim required it enabled, so present
                return Leased(delivery, _endpoint(endpoint._mapping))
        return None

    def settle(
        self,
        delivery_id: str,
        owner: str,
        *,
        status: DeliveryStatus,
        http_status: int | None,
        error: str | None,
        attempted_ms: int,
        next_attempt_ms: int | None = None,
    ) -> bool:
        """Record an attempt's outcome, if this owner still holds the lease (a worker whose
        lease lapsed and was taken over records nothing: the new holder sends again)."""
        values: dict[str, Any] = {
            "status": status.value,
            "attempts": _d.c.attempts + 1,
            "last_attempt_ms": attempted_ms,
            "last_status": http_status,
            "last_error": None if error is None else error[:300],
            "lease_owner": None,
            "lease_expires_ms": None,
        }
        if status is DeliveryStatus.DELIVERED:
            values["delivered_ms"] = attempted_ms
        if next_attempt_ms is not None:
            values["next_attempt_ms"] = next_attempt_ms
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(_d)
                .where(
                    _d.c.delivery_id == delivery_id,
                    _d.c.lease_owner == owner,
                    _d.c.status == _PENDING,
                )
                .values(**values)
            ).rowcount
        return changed == 1

    def prune(self, before_ms: int, batch: int = 5_000) -> tuple[int, int]:
        """Drop settled deliveries created before ``before_ms`` and the events nothing refers to
        any more; returns (deliveries, events) dropped. Pending deliveries and the newest event
        of each subject stay whatever their age: the first are still owed to a receiver, the
        second numbers the subject's next event (sequences never go backwards). Deletes go in
        batches, each its own short transaction, so the API never waits behind a long purge."""
        deliveries = self._delete_batches(
            select(_d.c.delivery_id).where(_d.c.status != _PENDING, _d.c.created_ms < before_ms),
            _d.c.delivery_id,
            batch,
        )
        with self.engine.connect() as conn:
            # Events at or after the oldest position a delivery still refers to stay; one scan.
            floor = conn.execute(select(func.min(_d.c.event_position))).scalar()
        newer = aliased(_e)
        unreferenced = select(_e.c.position).where(
            _e.c.created_ms < before_ms,
            exists().where(newer.c.subject == _e.c.subject, newer.c.sequence > _e.c.sequence),
        )
        if floor is not None:
            unreferenced = unreferenced.where(_e.c.position < floor)
        events = self._delete_batches(unreferenced, _e.c.position, batch)
        return deliveries, events

    def _delete_batches(self, chosen: Any, key: Any, batch: int) -> int:
        dropped = 0
        while True:
            with self.engine.begin() as conn:
                ids = conn.execute(chosen.limit(batch)).scalars().all()
                if not ids:
                    return dropped
                dropped += int(conn.execute(delete(key.table).where(key.in_(ids))).rowcount)

    def lease_owners(self) -> Sequence[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_d.c.lease_owner)
                .where(_d.c.status == _PENDING, _d.c.lease_owner.is_not(None))
                .distinct()
            ).all()
        return [row[0] for row in rows]

    def release_leases(self, owner: str) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(_d)
                .where(_d.c.lease_owner == owner, _d.c.status == _PENDING)
                .values(lease_owner=None, lease_expires_ms=None)
            )
        return int(result.rowcount)


def _delivery_select() -> Any:
    return select(
        _d.c.delivery_id,
        _d.c.endpoint_id,
        _d.c.partner_id,
        _e.c.event_id,
        _e.c.type.label("event_type"),
        _d.c.session_id,
        _e.c.payload,
        _d.c.status,
        _d.c.attempts,
        _d.c.next_attempt_ms,
        _d.c.last_attempt_ms,
        _d.c.last_status,
        _d.c.last_error,
        _d.c.delivered_ms,
        _d.c.created_ms,
    ).join(_e, _e.c.position == _d.c.event_position)


def _delivery(row: Any) -> Delivery:
    values = dict(row)
    values["status"] = DeliveryStatus(values["status"])
    return Delivery(**values)


def _endpoint_values(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "endpoint_id": endpoint.endpoint_id,
        "partner_id": endpoint.partner_id,
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": " ".join(endpoint.event_types),
        "secret": endpoint.secret,
        "previous_secret": endpoint.previous_secret,
        "previous_until_ms": endpoint.previous_until_ms,
        "created_ms": endpoint.created_ms,
        "disabled_ms": endpoint.disabled_ms,
        "disabled_reason": endpoint.disabled_reason,
    }


def _endpoint(row: Any) -> Endpoint:
    values = dict(row)
    values["event_types"] = tuple(values["event_types"].split())
    return Endpoint(**values)
