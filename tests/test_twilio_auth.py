"""Who a Twilio media stream is for: signed stream URLs under the key ring, and the
deprecated jwt_secret-signed ones (accepted until LEGACY_URLS_UNTIL)."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qsl, urlencode
from xml.etree import ElementTree

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tapevault import cli
from tapevault.config import Settings
from tapevault.core.clock import FixedClock
from tapevault.core.model import Tenant
from tapevault.core.signing import TWILIO_SUBJECT, UrlMode
from tapevault.errors import AuthError, UrlRejected
from tapevault.http.twilio import (
    LEGACY_URLS_UNTIL,
    SIGNED_URL_PARAMETER,
    _legacy_url_mac,
    authenticate,
)
from tapevault.runtime import Runtime, open_runtime

HOUR = 3600


def rs256_tenant(runtime: Runtime) -> Tenant:
    """A tenant whose Suki tokens are RS256-signed by its own key (no secret is shown)."""
    public = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return runtime.vault.tenants.create("rs256 clinic", 7 * 86400, suki_public_keys=public).tenant


def hs256_tenant(runtime: Runtime) -> Tenant:
    return runtime.vault.tenants.create("clinic", 7 * 86400).tenant


def stream_url(runtime: Runtime, tenant: Tenant, ttl: int = HOUR) -> dict[str, str]:
    """The query of the URL `tapevault twilio url` prints, as the server parses it."""
    expires = int(runtime.vault.clock.now()) + ttl
    return dict(parse_qsl(runtime.vault.links.twilio_stream_query(tenant.partner_id, expires)))


def legacy_url(tenant: Tenant, expires: int) -> dict[str, str]:
    """A stream URL as `tapevault twilio url` printed it before the key ring signed them."""
    mac = _legacy_url_mac(tenant, expires)
    return {"p": tenant.partner_id, "e": str(expires), "s": mac}


def altered(signature: str) -> str:
    """The signature with its first character changed (to another one, always)."""
    return ("B" if signature[0] == "A" else "A") + signature[1:]


async def who(runtime: Runtime, params: dict[str, str]) -> str:
    return (await authenticate(runtime.context, params, {})).partner_id


async def test_rs256_tenant_gets_a_working_url_signed_by_the_key_ring(runtime: Runtime) -> None:
    """An RS256 tenant's stream URL carries the signing key's id and opens its own stream."""
    tenant = rs256_tenant(runtime)
    params = stream_url(runtime, tenant)
    assert params["m"] == UrlMode.TWILIO.value and params["p"] == tenant.partner_id
    assert params["k"] == runtime.vault.keys.signing_key_ids()[0]
    assert await who(runtime, params) == tenant.partner_id


async def test_removing_the_key_revokes_the_urls_it_signed(runtime: Runtime) -> None:
    """After `keys rotate` old URLs still work; after `keys remove` of their key they fail."""
    tenant = hs256_tenant(runtime)
    old = stream_url(runtime, tenant)
    runtime.vault.keys.rotate_signing_key()
    new = stream_url(runtime, tenant)
    assert new["k"] != old["k"]
    assert await who(runtime, old) == await who(runtime, new) == tenant.partner_id
    assert runtime.vault.keys.remove_signing_key(old["k"])
    with pytest.raises(AuthError, match="key was removed"):
        await who(runtime, old)
    assert await who(runtime, new) == tenant.partner_id


async def test_altered_or_expired_stream_urls_fail(runtime: Runtime, clock: FixedClock) -> None:
    """Each signed field altered fails as invalid; past its expiry the URL fails as expired."""
    tenant, other = hs256_tenant(runtime), rs256_tenant(runtime)
    params = stream_url(runtime, tenant)
    for field, value in (
        ("p", other.partner_id),
        ("e", str(int(params["e"]) + 1)),
        ("m", "s"),
        ("s", altered(params["s"])),
        ("k", "deadbeef"),
    ):
        with pytest.raises(AuthError, match="invalid"):
            await who(runtime, {**params, field: value})
    clock.advance(HOUR)
    assert await who(runtime, params) == tenant.partner_id  # the last second still counts
    clock.advance(1)
    with pytest.raises(AuthError, match="expired"):
        await who(runtime, params)


async def test_stream_and_media_urls_do_not_cross(runtime: Runtime) -> None:
    """A stream URL opens no audio, and a media URL's signature opens no stream."""
    tenant = hs256_tenant(runtime)
    params = stream_url(runtime, tenant)
    with pytest.raises(UrlRejected):
        runtime.vault.media.authorize_media(TWILIO_SUBJECT, params)
    expires = int(runtime.vault.clock.now()) + HOUR
    media = runtime.vault.keys.signer().sign(
        "01JREC0000000000000000000", UrlMode.STREAM, expires, "x"
    )
    with pytest.raises(AuthError, match="invalid"):
        await who(runtime, dict(parse_qsl(media)))


async def test_legacy_urls_accepted_until_the_deprecation_ends(
    runtime: Runtime, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A jwt_secret-signed URL (no k=) still opens a stream, logged as deprecated, until
    LEGACY_URLS_UNTIL; altered it fails; from then on it fails whatever its expiry."""
    tenant = hs256_tenant(runtime)
    params = legacy_url(tenant, LEGACY_URLS_UNTIL + 365 * 86400)
    clock.set(LEGACY_URLS_UNTIL - 1)
    with caplog.at_level(logging.WARNING, logger="tapevault.twilio"):
        assert await who(runtime, params) == tenant.partner_id
    assert "deprecated" in caplog.text and tenant.partner_id in caplog.text
    for field, value in (("e", "0" + params["e"]), ("s", altered(params["s"]))):
        with pytest.raises(AuthError, match="invalid"):
            await who(runtime, {**params, field: value})
    clock.set(LEGACY_URLS_UNTIL)
    with pytest.raises(AuthError, match="no longer accepted"):
        await who(runtime, params)


async def test_signed_url_as_a_custom_parameter(runtime: Runtime) -> None:
    """Twilio may drop the <Stream url>'s query: the signed URL as the signed_url custom
    parameter authenticates the same way, and altered it fails the same way."""
    tenant = rs256_tenant(runtime)
    query = urlencode(stream_url(runtime, tenant))
    url = f"wss://vault.test/twilio/media-stream?{query}"
    caller = await authenticate(runtime.context, {}, {SIGNED_URL_PARAMETER: url})
    assert caller.partner_id == tenant.partner_id
    with pytest.raises(AuthError, match="invalid"):
        await authenticate(runtime.context, {}, {SIGNED_URL_PARAMETER: url.replace("e=", "e=9")})
    with pytest.raises(AuthError, match="no sdp_suki_token"):
        await authenticate(runtime.context, {}, {SIGNED_URL_PARAMETER: "x" * 5000 + url})


async def test_twiml_carries_the_url_as_a_parameter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`twilio url --twiml` prints well-formed TwiML: <Stream url> without a query, and a
    signed_url <Parameter> whose value (XML-unescaped) opens the tenant's stream."""
    data = ["--data-dir", str(tmp_path / "data")]
    assert cli.main(["tenant", "create", "clinic", *data]) == 0
    tenant_id = capsys.readouterr().out.split("partner_id: ")[1].split()[0]
    assert cli.main(["twilio", "url", "--tenant", tenant_id, "--twiml", *data]) == 0
    twiml = capsys.readouterr().out
    stream = ElementTree.fromstring(twiml).find("Connect/Stream")  # noqa: S314 - our output
    assert stream is not None and stream.get("url", "").endswith("/twilio/media-stream")
    parameter = stream.find("Parameter")
    assert parameter is not None and parameter.get("name") == SIGNED_URL_PARAMETER
    url = parameter.get("value", "")
    assert "&k=" in url
    rt = open_runtime(Settings.load({"data_dir": str(tmp_path / "data")}, env={}))
    try:
        caller = await authenticate(rt.context, {}, {SIGNED_URL_PARAMETER: url})
    finally:
        rt.close()
    assert caller.partner_id == tenant_id
