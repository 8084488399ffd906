"""``sdp_suki_token``: partner JWTs, HS256, algorithms pinned (RFC 8725).

The token's ``partner_id`` claim selects the partner whose secret must have signed it. The
algorithm list is fixed here and never read from the token, ``exp`` is required and checked
against the injected clock with at most 60 s of leeway, and every failure is one ``AuthError``
whose message says what was wrong without echoing the token.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from tapevault.core.clock import Clock
from tapevault.core.model import Partner
from tapevault.errors import AuthError

ALGORITHMS = ["HS256"]
LEEWAY_SECONDS = 60
MAX_TOKEN_BYTES = 8192
# Partner secrets change only when an operator rotates them; a short cache keeps the database out
# of every request without letting a rotated secret linger.
PARTNER_CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class SukiCaller:
    """Who is calling, as the access log records it (never the token itself)."""

    partner: Partner
    provider_id: str | None
    token_id: str | None


def issue_token(
    partner: Partner, *, now: float, ttl_seconds: int, provider_id: str | None = None
) -> str:
    """A token for ``partner`` valid for ``ttl_seconds``; what ``tapevault token issue`` prints."""
    claims: dict[str, Any] = {
        "partner_id": partner.partner_id,
        "iat": int(now),
        "exp": int(now) + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    if provider_id:
        claims["provider_id"] = provider_id
    return jwt.encode(claims, partner.jwt_secret, algorithm="HS256")


class SukiTokenVerifier:
    """Turns an ``sdp_suki_token`` header into a partner, or raises ``AuthError``."""

    def __init__(self, lookup: Callable[[str], Partner | None], clock: Clock) -> None:
        self._lookup = lookup
        self._clock = clock
        self._cache: dict[str, tuple[float, Partner | None]] = {}
        # token -> (caller, cache deadline on the monotonic clock, token exp)
        self._tokens: dict[str, tuple[SukiCaller, float, float]] = {}
        self._lock = threading.Lock()

    def _partner(self, partner_id: str) -> Partner | None:
        now = time.monotonic()
        hit = self._cache.get(partner_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        partner = self._lookup(partner_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[partner_id] = (now + PARTNER_CACHE_SECONDS, partner)
        return partner

    def verify(self, token: str | None, provider_id: str | None = None) -> SukiCaller:
        """Verify a token; a token verified in the last few seconds is answered from memory.

        Players ask for URLs in bursts with the same token, and a JWT decode costs more than the
        rest of the request. The cache never outlives the token's own expiry (checked here against
        the clock on every hit) nor the partner cache, so a rotated secret takes effect as fast.
        """
        if token:
            hit = self._tokens.get(token)
            if (
                hit is not None
                and hit[1] > time.monotonic()
                and self._clock.now() <= hit[2] + LEEWAY_SECONDS
            ):
                caller = hit[0]
                if provider_id and provider_id != caller.provider_id:
                    caller = SukiCaller(caller.partner, provider_id, caller.token_id)
                return caller
        caller, exp = self._verify(token, provider_id)
        if token is not None:
            with self._lock:
                if len(self._tokens) > 10_000:
                    self._tokens.clear()
                self._tokens[token] = (caller, time.monotonic() + PARTNER_CACHE_SECONDS, exp)
        return caller

    def _verify(self, token: str | None, provider_id: str | None) -> tuple[SukiCaller, float]:
        if not token:
            raise AuthError("Missing sdp_suki_token header.")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("Invalid authentication credentials: token too long.")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError("Invalid authentication credentials: malformed token.") from exc
        if header.get("alg") not in ALGORITHMS:
            raise AuthError("Invalid authentication credentials: algorithm not allowed.")
        partner_id = unverified.get("partner_id")
        if not isinstance(partner_id, str) or not partner_id or len(partner_id) > 64:
            raise AuthError("Invalid authentication credentials: missing partner_id claim.")
        partner = self._partner(partner_id)
        if partner is None:
            # Same words as a bad signature: an unknown partner must not be distinguishable.
            raise AuthError("Invalid authentication credentials: signature verification failed.")
        try:
            claims = jwt.decode(
                token,
                partner.jwt_secret,
                algorithms=ALGORITHMS,
                # Time claims are checked below against the injected clock, not PyJWT's wall clock.
                options={
                    "require": ["exp", "partner_id"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"Invalid authentication credentials: {exc}.") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError(
                "Invalid authentication credentials: signature verification failed."
            ) from exc
        except jwt.PyJWTError as exc:
            raise AuthError("Invalid authentication credentials: malformed token.") from exc
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthError("Invalid authentication credentials: exp must be a number.")
        if self._clock.now() > exp + LEEWAY_SECONDS:
            raise AuthError("Invalid authentication credentials: token has expired.")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and self._clock.now() + LEEWAY_SECONDS < nbf:
            raise AuthError("Invalid authentication credentials: token not yet valid.")
        token_id = claims.get("jti") if isinstance(claims.get("jti"), str) else None
        provider = provider_id or (
            claims.get("provider_id") if isinstance(claims.get("provider_id"), str) else None
        )
        return SukiCaller(partner=partner, provider_id=provider, token_id=token_id), float(exp)
