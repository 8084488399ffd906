"""Webhook endpoints and deliveries: the rules, without HTTP, SQL or sockets.

A tenant registers endpoints (a URL and the event types it wants). Each event of the tenant is
fanned out, in the transaction that wrote it, to a delivery per subscribed, enabled endpoint;
the worker sends deliveries (``tapevault.webhooks.dispatch``) signed per the Standard Webhooks
specification with the endpoint's secret, and retries on the specification's schedule:
immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about three days in all).

Rotating a secret keeps the previous one signing too for ``ROTATION_OVERLAP_MS``: a delivery
already on its way (or retried tomorrow) then verifies with either secret, so a receiver can
switch at its own pace.
"""

from __future__ import annotations

import base64
import enum
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from tapevault.core.events import EVENT_TYPES
from tapevault.errors import InvalidRequest, NotFound

# The Standard Webhooks schedule: the delay before each attempt, the first at once.
RETRY_SCHEDULE_SECONDS = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
RETRY_AFTER_CAP_SECONDS = 36000  # a receiver's Retry-After is honoured up to the longest step
ROTATION_OVERLAP_MS = 24 * 3600 * 1000
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
MAX_URL = 2048
MAX_DESCRIPTION = 200
MAX_ENDPOINTS = 50  # a tenant's; each event is one delivery row per endpoint
ENDPOINT_NOT_FOUND = "Webhook endpoint not found."
DELIVERY_NOT_FOUND = "Delivery not found."


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # due, waiting for a retry, or being sent
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up: the schedule ran out, or the receiver answered 410
    CANCELLED = "cancelled"  # its endpoint was disabled before it was sent


@dataclass(frozen=True, slots=True)
class Endpoint:
    endpoint_id: str
    partner_id: str
    url: str
    description: str | None
    event_types: tuple[str, ...]
    secret: str
    previous_secret: str | None
    previous_until_ms: int | None
    created_ms: int
    disabled_ms: int | None
    disabled_reason: str | None
    deleted_ms: int | None = None

    def signing_secrets(self, now_ms: int) -> list[str]:
        """The current secret, and the previous one while its overlap lasts."""
        found = [self.secret]
        if self.previous_secret and (self.previous_until_ms or 0) > now_ms:
            found.append(self.previous_secret)
        return found


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    endpoint_id: str
    partner_id: str
    event_id: str
    event_type: str
    session_id: str
    payload: str  # the JSON body, exactly as signed and sent
    status: DeliveryStatus
    attempts: int
    next_attempt_ms: int
    last_attempt_ms: int | None
    last_status: int | None
    last_error: str | None
    delivered_ms: int | None
    created_ms: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: the receiver's status (None when there was no answer)."""

    status: int | None
    error: str | None = None
    retry_after_seconds: int | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        """410: the receiver says the endpoint is gone for good; it is disabled."""
        return self.status == 410

    @property
    def label(self) -> str:
        """For metrics: delivered, gone, refused (SSRF), timeout, error or http_<class>."""
        if self.delivered:
            return "delivered"
        if self.gone:
            return "gone"
        if self.status is not None:
            return f"http_{self.status // 100}xx"
        if self.error and self.error.startswith("refused"):
            return "refused"
        if self.error and "timed out" in self.error:
            return "timeout"
        return "error"


def next_attempt_delay_ms(
    attempts: int, outcome: Outcome, schedule: Sequence[int] = RETRY_SCHEDULE_SECONDS
) -> int | None:
    """After ``attempts`` failed attempts, how long until the next one; None: give up.
    A receiver's ``Retry-After`` can push the next attempt later (never sooner), up to a cap."""
    if attempts >= len(schedule):
        return None
    delay = schedule[attempts]
    if outcome.retry_after_seconds is not None:
        delay = max(delay, min(outcome.retry_after_seconds, RETRY_AFTER_CAP_SECONDS))
    return delay * 1000


def plausible_id(text: str) -> bool:
    """Whether ``text`` could be one of our ids (``ep_…``, ``dlv_…``): anything else (NUL,
    which PostgreSQL cannot even compare, or a megabyte) is unknown without a query."""
    return 0 < len(text) <= 64 and text.isascii() and text.replace("_", "").isalnum()


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_endpoint_id() -> str:
    return "ep_" + uuid.uuid4().hex


def new_delivery_id() -> str:
    return "dlv_" + uuid.uuid4().hex


def new_event_id() -> str:
    return "msg_" + uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Registration:
    """A checked request to register an endpoint."""

    url: str
    event_types: tuple[str, ...]
    description: str | None


def parse_registration(body: dict[str, Any]) -> Registration:
    """``{"url": ..., "events": [...], "description": ...}``, each field checked (400)."""
    unknown = sorted(set(body) - {"url", "events", "description"})
    if unknown:
        raise InvalidRequest(f"Unknown field {unknown[0][:40]!r}; send url, events, description.")
    url = body.get("url")
    if not isinstance(url, str):
        raise InvalidRequest("url must be the receiver's http or https URL.")
    check_url_shape(url)
    events = body.get("events")
    if events is None:
        types: tuple[str, ...] = tuple(sorted(EVENT_TYPES))
    else:
        if (
            not isinstance(events, list)
            or not events
            or not all(isinstance(e, str) for e in events)
        ):
            raise InvalidRequest("events must be a non-empty list of event types.")
        bad = sorted(set(events) - EVENT_TYPES)
        if bad:
            raise InvalidRequest(
                f"Unknown event type {bad[0][:60]!r}; the types are "
                f"{', '.join(sorted(EVENT_TYPES))}."
            )
        types = tuple(sorted(set(events)))
    description = body.get("description")
    if description is not None and (
        not isinstance(description, str)
        or len(description) > MAX_DESCRIPTION
        or "\x00" in description
    ):
        raise InvalidRequest(f"description must be text of at most {MAX_DESCRIPTION} characters.")
    return Registration(url, types, description)


def check_url_shape(url: str) -> None:
    """http or https, a host, no credentials, no fragment, printable ASCII, bounded."""
    if len(url) > MAX_URL or not url.isascii() or any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise InvalidRequest(f"url must be printable ASCII of at most {MAX_URL} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequest("url is not a valid URL.") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest("url must be http or https.")
    if not parts.hostname:
        raise InvalidRequest("url must name a host.")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("url must not carry credentials; the signature authenticates us.")
    if parts.fragment:
        raise InvalidRequest("url must not have a fragment.")
    if port == 0:
        raise InvalidRequest("url's port must be from 1 to 65535.")


class Webhooks:
    """The tenant-facing operations; ``store`` is the database, ``check_address`` resolves a
    URL's host and raises ``InvalidRequest`` when it is not an allowed receiver (SSRF)."""

    def __init__(
        self,
        store: WebhookStore,
        now_ms: Callable[[], int],
        check_address: Callable[[str], None],
    ) -> None:
        self.store = store
        self.now_ms = now_ms
        self.check_address = check_address

    def register(self, partner_id: str, registration: Registration) -> Endpoint:
        if self.store.count_endpoints(partner_id) >= MAX_ENDPOINTS:
            raise InvalidRequest(f"A tenant may register at most {MAX_ENDPOINTS} endpoints.")
        self.check_address(registration.url)
        endpoint = Endpoint(
            endpoint_id=new_endpoint_id(),
            partner_id=partner_id,
            url=registration.url,
            description=registration.description,
            event_types=registration.event_types,
            secret=new_secret(),
            previous_secret=None,
            previous_until_ms=None,
            created_ms=self.now_ms(),
            disabled_ms=None,
            disabled_reason=None,
        )
        self.store.add_endpoint(endpoint)
        return endpoint

    def get(self, partner_id: str, endpoint_id: str) -> Endpoint:
        found = (
            self.store.get_endpoint(partner_id, endpoint_id) if plausible_id(endpoint_id) else None
        )
        if found is None:
            raise NotFound(ENDPOINT_NOT_FOUND)
        return found

    def remove(self, partner_id: str, endpoint_id: str) -> None:
        self.get(partner_id, endpoint_id)
        if not self.store.remove_endpoint(partner_id, endpoint_id):
            raise NotFound(ENDPOINT_NOT_FOUND)

    def rotate(self, partner_id: str, endpoint_id: str) -> Endpoint:
        """A new secret; the old one keeps signing for ``ROTATION_OVERLAP_MS``."""
        current = self.get(partner_id, endpoint_id)
        secret = new_secret()
        until = self.now_ms() + ROTATION_OVERLAP_MS
        if not self.store.rotate_secret(partner_id, endpoint_id, current.secret, secret, until):
            raise NotFound(ENDPOINT_NOT_FOUND)  # removed meanwhile (or rotated: ask again)
        return self.get(partner_id, endpoint_id)

    def deliveries(
        self, partner_id: str, endpoint_id: str, limit: int, after: str | None
    ) -> list[Delivery]:
        self.get(partner_id, endpoint_id)
        if after is not None and not plausible_id(after):
            raise InvalidRequest("cursor must be the next_cursor of a previous page.")
        return list(self.store.list_deliveries(partner_id, endpoint_id, limit, after))

    def replay(self, partner_id: str, endpoint_id: str, delivery_id: str) -> Delivery:
        """Send a delivery's event to its endpoint again, as a new delivery due now."""
        self.get(partner_id, endpoint_id)
        found = None
        if plausible_id(delivery_id):
            found = self.store.replay(partner_id, endpoint_id, delivery_id)
        if found is None:
            raise NotFound(DELIVERY_NOT_FOUND)
        return found


class WebhookStore(Protocol):
    """The database side of webhooks (db/webhookstore.py); every read is scoped by tenant."""

    def count_endpoints(self, partner_id: str) -> int: ...

    def add_endpoint(self, endpoint: Endpoint) -> None: ...

    def get_endpoint(self, partner_id: str, endpoint_id: str) -> Endpoint | None: ...

    def list_endpoints(self, partner_id: str) -> Sequence[Endpoint]: ...

    def remove_endpoint(self, partner_id: str, endpoint_id: str) -> bool:
        """Remove the endpoint and its delivery log; False if it was not the tenant's."""
        ...

    def rotate_secret(
        self, partner_id: str, endpoint_id: str, old: str, new: str, previous_until_ms: int
    ) -> bool:
        """Compare-and-set: ``new`` signs, ``old`` (still current) keeps signing until then."""
        ...

    def list_deliveries(
        self, partner_id: str, endpoint_id: str, limit: int, after: str | None
    ) -> Sequence[Delivery]:
        """Newest first; ``after`` is the last delivery id of the previous page."""
        ...

    def replay(self, partner_id: str, endpoint_id: str, delivery_id: str) -> Delivery | None:
        """A new pending delivery of that delivery's event to the same endpoint, due now (or
        the one still pending for that event and endpoint, if any)."""
        ...
