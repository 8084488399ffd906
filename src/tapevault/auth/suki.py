"""``sdp_suki_token``: partner JWTs, HS256 or RS256, algorithms pinned (RFC 8725).

The token's ``partner_id`` claim selects the tenant whose key must have signed it. Each tenant
verifies exactly one algorithm, fixed when it was created and never read from the token: HS256
with its ``jwt_secret``, or RS256 with the public key (PEM) or key set (JWKS, chosen by ``kid``)
given at creation — an RS256 tenant refuses HS256 tokens, so a public key can never be used as an
HMAC secret. ``exp`` is required and checked against the injected clock with at most 60 s of
leeway, and every failure is one ``AuthError`` whose message says what was wrong without echoing
the token.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tapevault.auth.claims import Refusals, VerifiedTokens, check_times, peek
from tapevault.core.clock import Clock
from tapevault.core.model import Tenant
from tapevault.errors import AuthError

ALGORITHMS = ["HS256", "RS256"]  # what any tenant may use; each tenant pins one of them
MAX_TOKEN_BYTES = 8192
# Tenant secrets change only when an operator rotates them; a short cache keeps the database out
# of every request without letting a rotated secret linger.
PARTNER_CACHE_SECONDS = 5.0
INVALID = "Invalid authentication credentials"
BAD_SIGNATURE = f"{INVALID}: signature verification failed."
REFUSALS = Refusals(
    malformed=f"{INVALID}: malformed token.",
    algorithm=f"{INVALID}: algorithm not allowed.",
    missing_id=f"{INVALID}: missing partner_id claim.",
    not_a_time=f"{INVALID}: exp must be a time in seconds.",
    expired=f"{INVALID}: token has expired.",
    not_yet_valid=f"{INVALID}: token not yet valid.",
)


PublicKeys = dict[str | None, RSAPublicKey]


def parse_suki_public_keys(text: str) -> PublicKeys:
    """RSA public keys from a PEM public key or a JWKS document, by ``kid`` (None for a PEM).

    Raises ``ValueError`` saying what is wrong; ``tapevault tenant create`` checks the file with
    this before storing it.
    """
    stripped = text.strip()
    keys: PublicKeys = {}
    if stripped.startswith("{"):
        try:
            jwks = jwt.PyJWKSet.from_json(stripped)
        except (jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError) as exc:
            raise ValueError(f"not a usable JWKS document: {exc}") from exc
        for jwk in jwks.keys:
            if isinstance(jwk.key, RSAPublicKey):
                keys[jwk.key_id] = jwk.key
        if not keys:
            raise ValueError("the JWKS document holds no RSA public key")
        return keys
    try:
        key = load_pem_public_key(stripped.encode())
    except ValueError as exc:
        raise ValueError("not a PEM public key (-----BEGIN PUBLIC KEY-----) or JWKS") from exc
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the PEM key is not an RSA public key (RS256 needs RSA)")
    keys[None] = key
    return keys


@dataclass(frozen=True, slots=True)
class SukiCaller:
    """Who is calling, as the access log records it (never the token itself)."""

    partner: Tenant
    provider_id: str | None
    token_id: str | None


def issue_token(
    partner: Tenant, *, now: float, ttl_seconds: int, provider_id: str | None = None
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

    def __init__(self, lookup: Callable[[str], Tenant | None], clock: Clock) -> None:
        self._lookup = lookup
        self._clock = clock
        self._cache: dict[str, tuple[float, Tenant | None]] = {}
        self._verified: VerifiedTokens[SukiCaller] = VerifiedTokens(clock, PARTNER_CACHE_SECONDS)
        self._lock = threading.Lock()
        self._public_keys: dict[str, PublicKeys] = {}

    def _rsa_key(self, tenant: Tenant, kid: object) -> RSAPublicKey:
        text = tenant.suki_public_keys or ""
        keys = self._public_keys.get(text)
        if keys is None:
            try:
                keys = parse_suki_public_keys(text)
            except ValueError as exc:
                raise AuthError(f"{INVALID}: no usable key.") from exc
            with self._lock:
                if len(self._public_keys) > 1000:
                    self._public_keys.clear()
                self._public_keys[text] = keys
        if isinstance(kid, str) and kid in keys:
            return keys[kid]
        if len(keys) == 1:
            return next(iter(keys.values()))
        raise AuthError(f"{INVALID}: unknown key id (kid).")

    def _partner(self, partner_id: str) -> Tenant | None:
        now = time.monotonic()
        hit = self._cache.get(partner_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._verified.generation
        partner = self._lookup(partner_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            if generation == self._verified.generation:  # not read before a ``forget``
                self._cache[partner_id] = (now + PARTNER_CACHE_SECONDS, partner)
        return partner

    def forget(self) -> None:
        """Drop the cached partners and verified tokens: a secret or key changed (the change
        feed, db/changes.py, calls this on every node)."""
        self._verified.clear()  # first: it moves the generation the partner cache checks
        self._cache.clear()

    def verify(self, token: str | None, provider_id: str | None = None) -> SukiCaller:
        """Verify a token; a token verified in the last few seconds is answered from memory
        (``VerifiedTokens``: never past its ``exp``, nor longer than the partner cache, so a
        rotated secret takes effect as fast)."""
        caller = self._verified.get(token)
        if caller is not None:
            if provider_id and provider_id != caller.provider_id:
                caller = SukiCaller(caller.partner, provider_id, caller.token_id)
            return caller
        if not token:
            raise AuthError("Missing sdp_suki_token header.")
        generation = self._verified.generation
        caller, exp = self._verify(token, provider_id)
        self._verified.put(token, caller, exp, generation)
        return caller

    def _verify(self, token: str, provider_id: str | None) -> tuple[SukiCaller, float | None]:
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(f"{INVALID}: token too long.")
        header, partner_id = peek(token, "partner_id", ALGORITHMS, REFUSALS)
        partner = self._partner(partner_id)
        if partner is None:
            # Same words as a bad signature: an unknown partner must not be distinguishable.
            raise AuthError(BAD_SIGNATURE)
        key: str | RSAPublicKey
        if partner.suki_public_keys:
            pinned = "RS256"
            key = self._rsa_key(partner, header.get("kid"))
        else:
            pinned, key = "HS256", partner.jwt_secret
        if header.get("alg") != pinned:
            raise AuthError(REFUSALS.algorithm)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[pinned],
                # Time claims are checked below against the injected clock, not PyJWT's wall clock.
                options={
                    "require": ["exp", "partner_id"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"{INVALID}: {exc}.") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError(BAD_SIGNATURE) from exc
        except jwt.PyJWTError as exc:
            raise AuthError(REFUSALS.malformed) from exc
        # ``require`` made exp present, so it is checked (and returned) like any time claim.
        exp = check_times(claims, self._clock.now(), REFUSALS)
        token_id = claims.get("jti") if isinstance(claims.get("jti"), str) else None
        provider = provider_id or (
            claims.get("provider_id") if isinstance(claims.get("provider_id"), str) else None
        )
        return SukiCaller(partner=partner, provider_id=provider, token_id=token_id), exp
