"""JWT claims read strictly, and the few-second memory of verified tokens: what the Suki and
Kore verifiers share (each keeps its own key choice and its own words, ``Refusals``).

PyJWT parses JSON that may carry ``NaN``, ``Infinity`` or ``1e308`` as a number: compared with a
clock, NaN is never "past" and Infinity never arrives, which would make a token never expire.
A time claim here is a finite number of seconds within a sane range, or the token is refused.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import jwt

from tapevault.core.clock import Clock
from tapevault.errors import AuthError

MAX_SECONDS = 1e11  # about the year 5138: beyond that a "time" is an attack, not a date
LEEWAY_SECONDS = 60
MAX_ID_LENGTH = 64  # of the claim that names the tenant (partner_id, appId)

T = TypeVar("T")


class Refusals(NamedTuple):
    """A dialect's words for each way the shared checks refuse a token."""

    malformed: str
    algorithm: str
    missing_id: str  # the claim naming the tenant is absent or not a short string
    not_a_time: str
    expired: str
    not_yet_valid: str


def seconds(value: object) -> float | None:
    """The claim as Unix seconds, or None when it is not a usable time."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or abs(value) > MAX_SECONDS:
        return None
    return float(value)


def peek(
    token: str, id_claim: str, algorithms: Sequence[str], refusals: Refusals
) -> tuple[dict[str, Any], str]:
    """The unverified header and ``id_claim``: which tenant's key must verify the token.

    Nothing read here is trusted beyond choosing that key; the algorithm must be one the
    dialect allows before any key is looked at.
    """
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AuthError(refusals.malformed) from exc
    if header.get("alg") not in algorithms:
        raise AuthError(refusals.algorithm)
    value = unverified.get(id_claim)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise AuthError(refusals.missing_id)
    return header, value


def check_times(claims: Mapping[str, Any], now: float, refusals: Refusals) -> float | None:
    """Check ``exp`` and ``nbf`` (each when present) against ``now`` with ``LEEWAY_SECONDS``;
    the token's ``exp`` in seconds, None when it has none."""
    exp = None
    if "exp" in claims:
        exp = seconds(claims["exp"])
        if exp is None:
            raise AuthError(refusals.not_a_time)
        if now > exp + LEEWAY_SECONDS:
            raise AuthError(refusals.expired)
    if "nbf" in claims:
        nbf = seconds(claims["nbf"])
        if nbf is None or now + LEEWAY_SECONDS < nbf:
            raise AuthError(refusals.not_yet_valid)
    return exp


class VerifiedTokens(Generic[T]):
    """Tokens verified in the last few seconds, answered from memory.

    Players ask in bursts with the same token, and a JWT decode costs more than the rest of the
    request. An entry lasts ``lifetime`` seconds on the monotonic clock (so a rotated secret
    lingers no longer) and never past the token's own ``exp``, checked against the injected
    clock on every hit.
    """

    def __init__(self, clock: Clock, lifetime: float, limit: int = 10_000) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._limit = limit
        # token -> (caller, deadline on the monotonic clock, exp or None)
        self._tokens: dict[str, tuple[T, float, float | None]] = {}
        self._lock = threading.Lock()
        self._generation = 0

    def get(self, token: str | None) -> T | None:
        hit = self._tokens.get(token) if token else None
        if hit is None:
            return None
        caller, deadline, exp = hit
        if deadline <= time.monotonic():
            return None
        if exp is not None and self._clock.now() > exp + LEEWAY_SECONDS:
            return None
        return caller

    @property
    def generation(self) -> int:
        """Moves on at every ``clear``: read it before verifying, hand it to ``put``."""
        return self._generation

    def clear(self) -> None:
        """Forget every verified token (a secret or a key changed somewhere)."""
        with self._lock:
            self._generation += 1
            self._tokens.clear()

    def put(self, token: str, caller: T, exp: float | None, generation: int | None = None) -> None:
        """Remember a verified token, unless the cache was cleared since ``generation`` was
        read: a verification that read the old secret must not outlive the change."""
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            if len(self._tokens) > self._limit:
                self._tokens.clear()
            self._tokens[token] = (caller, time.monotonic() + self._lifetime, exp)
