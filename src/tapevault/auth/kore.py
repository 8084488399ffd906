"""Kore.ai's ``auth`` header: a JWT signed HS256 with the app's client secret.

Kore's recipe for these tokens puts the app's client id in the ``appId`` claim and signs with the
client secret; it does not ask for ``exp``. tapevault therefore accepts a token without ``exp``
(as Kore does) but enforces ``exp`` and ``nbf`` whenever they are present, with 60 s of leeway.
The algorithm is pinned (HS256 only, never read from the token). Rotating the client secret
(``tapevault tenant rotate-kore-secret``) revokes every token signed with the old one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jwt

from tapevault.auth.claims import Refusals, VerifiedTokens, check_times, peek
from tapevault.core.clock import Clock
from tapevault.core.model import Tenant
from tapevault.errors import AuthError

ALGORITHMS = ["HS256"]
MAX_TOKEN_BYTES = 8192
CACHE_SECONDS = 5.0
INVALID = "Invalid auth token."
BAD_SIGNATURE = f"{INVALID} Signature verification failed."
REFUSALS = Refusals(
    malformed=f"{INVALID} It is not a well-formed JWT.",
    algorithm=f"{INVALID} Only HS256 is accepted.",
    missing_id=f"{INVALID} The appId claim is missing.",
    not_a_time=f"{INVALID} exp must be a time in seconds.",
    expired=f"{INVALID} The token has expired.",
    not_yet_valid=f"{INVALID} The token is not valid yet.",
)


@dataclass(frozen=True, slots=True)
class KoreCaller:
    tenant: Tenant
    token_id: str | None  # jti, when the token has one; never the token


class KoreTokenVerifier:
    def __init__(self, lookup: Callable[[str], Tenant | None], clock: Clock) -> None:
        self._lookup = lookup
        self._clock = clock
        self._verified: VerifiedTokens[KoreCaller] = VerifiedTokens(clock, CACHE_SECONDS)

    def forget(self) -> None:
        """Drop the verified tokens: a client secret changed (the change feed calls this)."""
        self._verified.clear()

    def verify(self, token: str | None) -> KoreCaller:
        """A caller for a valid token; a token seen in the last few seconds is answered from
        memory (never past its own ``exp``, never longer than a rotated secret may linger)."""
        hit = self._verified.get(token)
        if hit is not None:
            return hit
        if not token:
            raise AuthError("Missing auth header: send the app's JWT in 'auth'.")
        generation = self._verified.generation
        caller, exp = self._verify(token)
        self._verified.put(token, caller, exp, generation)
        return caller

    def _verify(self, token: str) -> tuple[KoreCaller, float | None]:
        if token.lower().startswith("bearer "):
            token = token[7:].strip()  # some clients add the scheme; the signature decides
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(INVALID)
        _, app_id = peek(token, "appId", ALGORITHMS, REFUSALS)
        tenant = self._lookup(app_id)
        if tenant is None:
            raise AuthError(BAD_SIGNATURE)
        try:
            claims = jwt.decode(
                token,
                tenant.kore_client_secret,
                algorithms=ALGORITHMS,
                options={
                    "require": ["appId"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                },
            )
        except jwt.InvalidSignatureError as exc:
            raise AuthError(BAD_SIGNATURE) from exc
        except jwt.PyJWTError as exc:
            raise AuthError(REFUSALS.malformed) from exc
        exp = check_times(claims, self._clock.now(), REFUSALS)
        jti = claims.get("jti")
        return KoreCaller(tenant, jti if isinstance(jti, str) else None), exp


def issue_kore_token(tenant: Tenant, *, now: float, ttl_seconds: int | None) -> str:
    """A token as Kore's recipe makes it (plus ``iat``/``exp`` when a lifetime is given)."""
    claims: dict[str, object] = {"appId": tenant.kore_client_id, "sub": "tapevault-cli"}
    if ttl_seconds is not None:
        claims["iat"] = int(now)
        claims["exp"] = int(now) + ttl_seconds
    return jwt.encode(claims, tenant.kore_client_secret, algorithm="HS256")
