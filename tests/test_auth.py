"""Credentials of the three dialects: Suki HS256/RS256 (PEM and JWKS), Kore JWTs, API keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tapevault.auth.kore import KoreTokenVerifier, issue_kore_token
from tapevault.auth.suki import SukiTokenVerifier, issue_token, parse_suki_public_keys
from tapevault.auth.workspace import ApiKeyVerifier
from tapevault.core.apikeys import new_api_key
from tapevault.core.clock import FixedClock
from tapevault.core.model import ApiKey, KeyRole, Tenant
from tapevault.errors import AuthError, Forbidden

NOW = 1_800_000_000.0
SECRET = "hs-secret-of-at-least-thirty-two-bytes"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def jwks(*keys: tuple[str, rsa.RSAPrivateKey]) -> str:
    entries = []
    for kid, key in keys:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        entries.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
    return json.dumps({"keys": entries})


def verifier(tenant: Tenant) -> SukiTokenVerifier:
    return SukiTokenVerifier({tenant.partner_id: tenant}.get, FixedClock(NOW))


def claims(tenant: Tenant, **extra: object) -> dict[str, object]:
    return {"partner_id": tenant.partner_id, "exp": int(NOW) + 600, "jti": "t1", **extra}


PRIVATE = rsa_key()
OTHER = rsa_key()


def test_rs256_tenant_accepts_its_keys_tokens_from_pem() -> None:
    """An RS256 token signed by the PEM's private key verifies; the caller is the tenant."""
    tenant = Tenant(
        "p1",
        "clinic",
        SECRET,
        604800,
        0,
        suki_public_keys=pem(PRIVATE),
    )
    token = jwt.encode(claims(tenant), PRIVATE, algorithm="RS256")
    caller = verifier(tenant).verify(token)
    assert caller.partner == tenant and caller.token_id == "t1"


def test_rs256_tenant_refuses_hs256_and_key_confusion() -> None:
    """HS256 tokens (with the tenant's secret, or with the public key as HMAC secret) and
    tokens of another RSA key are refused for an RS256 tenant."""
    public = pem(PRIVATE)
    tenant = Tenant("p1", "clinic", SECRET, 604800, 0, suki_public_keys=public)
    check = verifier(tenant)
    forged = [
        jwt.encode(claims(tenant), SECRET, algorithm="HS256"),
        _hmac_token(claims(tenant), public.encode()),
        jwt.encode(claims(tenant), OTHER, algorithm="RS256"),
        jwt.encode(claims(tenant), None, algorithm="none"),
    ]
    for token in forged:
        with pytest.raises(AuthError):
            check.verify(token)


def _hmac_token(payload: dict[str, object], secret: bytes) -> str:
    """HS256 by hand: PyJWT itself refuses to use a PEM as an HMAC secret."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def test_hs256_tenant_refuses_rs256() -> None:
    """An HS256 tenant takes only HS256, even for a well-signed RS256 token."""
    tenant = Tenant("p1", "clinic", SECRET, 604800, 0)
    with pytest.raises(AuthError, match="algorithm"):
        verifier(tenant).verify(jwt.encode(claims(tenant), PRIVATE, algorithm="RS256"))
    assert verifier(tenant).verify(issue_token(tenant, now=NOW, ttl_seconds=60)).partner == tenant


def test_jwks_selects_the_key_by_kid() -> None:
    """With a JWKS, the token's kid picks the key; an unknown kid or a missing one fails."""
    tenant = Tenant(
        "p1", "clinic", "s", 604800, 0, suki_public_keys=jwks(("a", PRIVATE), ("b", OTHER))
    )
    check = verifier(tenant)
    for kid, key in (("a", PRIVATE), ("b", OTHER)):
        token = jwt.encode(claims(tenant), key, algorithm="RS256", headers={"kid": kid})
        assert check.verify(token).partner == tenant
    wrong = jwt.encode(claims(tenant), PRIVATE, algorithm="RS256", headers={"kid": "b"})
    unknown = jwt.encode(claims(tenant), PRIVATE, algorithm="RS256", headers={"kid": "zz"})
    missing = jwt.encode(claims(tenant), PRIVATE, algorithm="RS256")
    for token in (wrong, unknown, missing):
        with pytest.raises(AuthError):
            check.verify(token)


def test_rs256_tokens_still_need_exp() -> None:
    """exp is required and enforced (60 s leeway) whatever the algorithm."""
    tenant = Tenant("p1", "clinic", "s", 604800, 0, suki_public_keys=pem(PRIVATE))
    no_exp = {k: v for k, v in claims(tenant).items() if k != "exp"}
    expired = claims(tenant, exp=int(NOW) - 61)
    for payload in (no_exp, expired):
        with pytest.raises(AuthError):
            verifier(tenant).verify(jwt.encode(payload, PRIVATE, algorithm="RS256"))


@pytest.mark.parametrize(
    "text",
    [
        "not a key",
        '{"keys": []}',
        '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
    ],
)
def test_unusable_public_keys_are_refused_at_creation(text: str) -> None:
    """Garbage, an empty or symmetric JWKS and a broken PEM are ValueErrors with a reason."""
    with pytest.raises(ValueError):
        parse_suki_public_keys(text)


def test_ec_keys_are_refused() -> None:
    """RS256 needs RSA: an EC public key is refused with a message saying so."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    text = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    with pytest.raises(ValueError, match="RSA"):
        parse_suki_public_keys(text)


def test_kore_tokens() -> None:
    """Kore: appId selects the app, its client secret verifies; exp enforced only when set."""
    tenant = Tenant("p1", "clinic", "s", 604800, 0)
    clock = FixedClock(NOW)
    check = KoreTokenVerifier({tenant.kore_client_id: tenant}.get, clock)
    assert check.verify(issue_kore_token(tenant, now=NOW, ttl_seconds=None)).tenant == tenant
    short = issue_kore_token(tenant, now=NOW, ttl_seconds=10)
    assert check.verify(short).tenant == tenant
    clock.advance(71)
    with pytest.raises(AuthError, match="expired"):
        check.verify(short)  # also past the few-second cache of verified tokens
    with pytest.raises(AuthError):
        check.verify(jwt.encode({"appId": tenant.kore_client_id}, PRIVATE, algorithm="RS256"))


def test_api_keys_hashed_revoked_expired() -> None:
    """Keys verify by hash only; a revoked or expired key and a foreign scheme are 401; a
    member key is refused admin work."""
    tenant = Tenant("p1", "clinic", "s", 604800, 0)
    clock = FixedClock(NOW)
    stored: dict[str, ApiKey] = {}
    key, secret = new_api_key("p1", name="k", role=KeyRole.MEMBER, now_ms=int(NOW * 1000))
    assert secret not in repr(key) and key.key_hash != secret
    stored[key.key_hash] = key
    check = ApiKeyVerifier(stored.get, {"p1": tenant}.get, clock)
    caller = check.verify(f"Bearer {secret}")
    assert caller.tenant == tenant
    with pytest.raises(Forbidden):
        caller.require(KeyRole.ADMIN)
    for header in (None, secret, f"Basic {secret}", "Bearer tvk_other"):
        with pytest.raises(AuthError):
            check.verify(header)
    stored[key.key_hash] = replace(key, revoked_ms=int(NOW * 1000))
    with pytest.raises(AuthError):
        check.verify(f"Bearer {secret}")
    stored[key.key_hash] = replace(key, expires_ms=int(NOW * 1000))
    with pytest.raises(AuthError):
        check.verify(f"Bearer {secret}")


@pytest.mark.parametrize("exp", ["NaN", "Infinity", "-Infinity", "1e308", "true", '"soon"'])
def test_time_claims_that_are_not_times_are_refused(exp: str) -> None:
    """A signed token whose exp (or nbf) is NaN, infinite, absurd or not a number never counts
    as a token that does not expire: Suki and Kore refuse it."""
    # One secret for both dialects, so that one token is well signed for each of them.
    tenant = Tenant("p1", "clinic", SECRET, 604800, 0, kore_client_secret=SECRET)
    kore = KoreTokenVerifier({tenant.kore_client_id: tenant}.get, FixedClock(NOW))
    base = {"partner_id": "p1", "appId": tenant.kore_client_id, "exp": int(NOW) + 60}
    control = _hmac_token_raw(json.dumps(base), SECRET.encode())
    assert verifier(tenant).verify(control).partner == tenant  # so the claim is what is refused
    assert kore.verify(control).tenant == tenant
    for claim in ("exp", "nbf"):
        body = json.dumps(base)[:-1] + f', "{claim}": {exp}}}'
        if claim == "exp":
            body = body.replace(f'"exp": {int(NOW) + 60}, ', "")
            assert body.count('"exp"') == 1
        token = _hmac_token_raw(body, SECRET.encode())
        with pytest.raises(AuthError):
            verifier(tenant).verify(token)
        with pytest.raises(AuthError):
            kore.verify(token)


def _hmac_token_raw(payload: str, secret: bytes) -> str:
    """HS256 over a payload written by hand (NaN and Infinity are not JSON a library writes)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(payload.encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"
