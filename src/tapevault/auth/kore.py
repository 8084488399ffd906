"""Kore.ai's ``auth`` header: a JWT signed HS256 with the app's client secret.

Kore's recipe for these tokens puts the app's client id in the ``appId`` claim and signs with the
client secret; it does not ask for ``exp``. tapevault therefore accepts a token without ``exp``
(as Kore does) but enforces ``exp`` and ``nbf`` whenever they are present, with 60 s of leeway.
The algorithm is pinned (HS256 only, never read from the token). Rotating the client secret
(``tapevault tenant rotate-kore-secret``) revokes every token signed with the old one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from tapevault.auth.claims import seconds
from tapevault.core.clock import Clock
from tapevault.core.model import Tenant
from tapevault.errors import AuthError

ALGORITHMS = ["HS256"]
LEEWAY_SECONDS = 60
MAX_TOKEN_BYTES = 8192
CACHE_SECONDS = 5.0
INVALID = "Invalid auth token."


@dataclass(frozen=True, slots=True)
class KoreCaller:
    tenant: Tenant
    token_id: str | None  # jti, when the token has one; never the token


class KoreTokenVerifier:
    def __init__(self, lookup: Callable[[str], Tenant | None], clock: Clock) -> None:
        self._lookup = lookup
        self._clock = clock
        # token -> (caller, cache deadline on the monotonic clock, exp or None)
        self._tokens: dict[str, tuple[KoreCaller, float, float | None]] = {}
        self._lock = threading.Lock()

    def verify(self, token: str | None) -> KoreCaller:
        """A caller for a valid token; a token seen in the last few seconds is answered from
        memory (never past its own ``exp``, never longer than a rotated secret may linger)."""
        if token:
            hit = self._tokens.get(token)
            if (
                hit is not None
                and hit[1] > time.monotonic()
                and (hit[2] is None or self._clock.now() <= hit[2] + LEEWAY_SECONDS)
            ):
                return hit[0]
        caller, exp = self._verify(token)
        assert token is not None
        with self._lock:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[token] = (caller, time.monotonic() + CACHE_SECONDS, exp)
        return caller

    def _verify(self, token: str | None) -> tuple[KoreCaller, float | None]:
        if not token:
            raise AuthError("Missing auth header: send the app's JWT in 'auth'.")
        if token.lower().startswith("bearer "):
            token = token[7:].strip()  # some clients add the scheme; the signature decides
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(INVALID)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"{INVALID} It is not a well-formed JWT.") from exc
        if header.get("alg") not in ALGORITHMS:
            raise AuthError(f"{INVALID} Only HS256 is accepted.")
        app_id = unverified.get("appId")
        if not isinstance(app_id, str) or not app_id or len(app_id) > 64:
            raise AuthError(f"{INVALID} The appId claim is missing.")
        tenant = self._lookup(app_id)
        if tenant is None:
            raise AuthError(f"{INVALID} Signature verification failed.")
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
            raise AuthError(f"{INVALID} Signature verification failed.") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"{INVALID} It is not a well-formed JWT.") from exc
        now = self._clock.now()
        exp = None
        if "exp" in claims:
            exp = seconds(claims["exp"])
            if exp is None:
                raise AuthError(f"{INVALID} exp must be a time in seconds.")
            if now > exp + LEEWAY_SECONDS:
                raise AuthError(f"{INVALID} The token has expired.")
        if "nbf" in claims:
            nbf = seconds(claims["nbf"])
            if nbf is None or now + LEEWAY_SECONDS < nbf:
                raise AuthError(f"{INVALID} The token is not valid yet.")
        jti = claims.get("jti")
        return KoreCaller(tenant, jti if isinstance(jti, str) else None), exp


def issue_kore_token(tenant: Tenant, *, now: float, ttl_seconds: int | None) -> str:
    """A token as Kore's recipe makes it (plus ``iat``/``exp`` when a lifetime is given)."""
    claims: dict[str, object] = {"appId": tenant.kore_client_id, "sub": "tapevault-cli"}
    if ttl_seconds is not None:
        claims["iat"] = int(now)
        claims["exp"] = int(now) + ttl_seconds
    return jwt.encode(claims, tenant.kore_client_secret, algorithm="HS256")
