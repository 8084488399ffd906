"""Signed media URLs: each signed field altered on its own, expiry boundaries, key rotation."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from tapevault.core.model import SigningKey
from tapevault.core.signing import UrlMode, UrlSigner, new_signing_key
from tapevault.errors import UrlRejected

RID = "01KFJZTJWZH28GRHQXVCGW4Y47"
PARTNER = "partner1"
EXPIRES = 1_800_000_900


def key(kid: str) -> SigningKey:
    return new_signing_key(kid, 0)


def signed(signer: UrlSigner, mode: UrlMode = UrlMode.STREAM) -> dict[str, str]:
    return dict(parse_qsl(signer.sign(RID, mode, EXPIRES, PARTNER)))


def test_valid_url_verifies_with_its_fields() -> None:
    """A freshly signed URL verifies and reports what it grants."""
    signer = UrlSigner([key("k1")])
    grant = signer.verify(RID, signed(signer, UrlMode.DOWNLOAD), EXPIRES - 100)
    assert (grant.recording_id, grant.mode, grant.expires, grant.partner_id, grant.key_id) == (
        RID,
        UrlMode.DOWNLOAD,
        EXPIRES,
        PARTNER,
        "k1",
    )


def test_expiry_boundary() -> None:
    """Valid at exactly the expiry second, expired one second past it."""
    signer = UrlSigner([key("k1")])
    query = signed(signer)
    assert signer.verify(RID, query, EXPIRES).expires == EXPIRES
    with pytest.raises(UrlRejected) as info:
        signer.verify(RID, query, EXPIRES + 1)
    assert info.value.reason == "expired"
    assert str(EXPIRES) in info.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [("m", "d"), ("e", str(EXPIRES + 1)), ("p", "partner2"), ("k", "k2"), ("s", "A" * 43)],
)
def test_each_signed_field_altered_alone_is_invalid(field: str, value: str) -> None:
    """Changing any one signed field (mode, expiry, partner, key id, signature) fails as invalid."""
    signer = UrlSigner([key("k1"), key("k2")])
    query = signed(signer)
    query[field] = value
    with pytest.raises(UrlRejected) as info:
        signer.verify(RID, query, EXPIRES - 1)
    assert info.value.reason == "invalid"


def test_recording_id_is_signed() -> None:
    """The same query on another recording's path does not verify."""
    signer = UrlSigner([key("k1")])
    with pytest.raises(UrlRejected):
        signer.verify("01KFJZTJWZH28GRHQXVCGW4Y48", signed(signer), EXPIRES - 1)


def test_altered_expiry_in_the_past_reads_invalid_not_expired() -> None:
    """The signature is checked before expiry, so tampering is never reported as expiry."""
    signer = UrlSigner([key("k1")])
    query = signed(signer)
    query["e"] = str(EXPIRES - 10_000)
    with pytest.raises(UrlRejected) as info:
        signer.verify(RID, query, EXPIRES - 1)
    assert info.value.reason == "invalid"


@pytest.mark.parametrize("drop", ["m", "e", "p", "k", "s"])
def test_missing_field_is_invalid(drop: str) -> None:
    """A URL missing any parameter is rejected."""
    signer = UrlSigner([key("k1")])
    query = signed(signer)
    del query[drop]
    with pytest.raises(UrlRejected):
        signer.verify(RID, query, EXPIRES - 1)


def test_truncated_signature_is_invalid() -> None:
    """A signature cut short is rejected."""
    signer = UrlSigner([key("k1")])
    query = signed(signer)
    query["s"] = query["s"][:-1]
    with pytest.raises(UrlRejected):
        signer.verify(RID, query, EXPIRES - 1)


def test_signature_from_another_key_is_invalid() -> None:
    """A URL signed by a key this signer does not hold fails, even with a matching key id."""
    mine = UrlSigner([key("k1")])
    theirs = UrlSigner([SigningKey("k1", b"\x01" * 32, 0)])
    with pytest.raises(UrlRejected):
        mine.verify(RID, signed(theirs), EXPIRES - 1)


def test_rotation_new_key_signs_old_keys_verify_until_removed() -> None:
    """After rotation the newest key signs; URLs of the older key verify until it is removed."""
    old = key("old")
    before = UrlSigner([old])
    old_url = signed(before)
    rotated = UrlSigner([key("new"), old])
    assert signed(rotated)["k"] == "new"
    assert rotated.verify(RID, old_url, EXPIRES - 1).key_id == "old"
    removed = UrlSigner([key("new")])
    with pytest.raises(UrlRejected):
        removed.verify(RID, old_url, EXPIRES - 1)


@pytest.mark.parametrize("bad", ["a\nb", "", "x" * 65, "p&s=1", "ü"])
def test_field_charset_is_enforced(bad: str) -> None:
    """Fields outside the strict charset are rejected before any MAC is computed."""
    signer = UrlSigner([key("k1")])
    query = signed(signer)
    query["p"] = bad
    with pytest.raises(UrlRejected):
        signer.verify(RID, query, EXPIRES - 1)


@pytest.mark.parametrize(
    "expires",
    [
        "0" + str(EXPIRES),  # a leading zero: the same number, another spelling
        "000" + str(EXPIRES),
        "+" + str(EXPIRES),
        " " + str(EXPIRES),
        str(EXPIRES) + " ",
        "\u0661\u0668" + str(EXPIRES)[2:],  # Arabic-Indic digits int() would read as 18...
        "\uff11" + str(EXPIRES)[1:],  # a fullwidth one
    ],
)
def test_expiry_must_be_written_canonically(expires: str) -> None:
    """Only the canonical decimal spelling of the signed expiry verifies; any other spelling of
    the same number (leading zeros, sign, spaces, non-ASCII digits) is invalid, not accepted."""
    signer = UrlSigner([key("k1")])
    query = signed(signer)
    query["e"] = expires
    with pytest.raises(UrlRejected) as info:
        signer.verify(RID, query, EXPIRES - 1)
    assert info.value.reason == "invalid"


def test_expiry_zero_is_canonical() -> None:
    """Zero is the one number spelt with a leading 0 (an expired URL, not a malformed one)."""
    signer = UrlSigner([key("k1")])
    query = dict(parse_qsl(signer.sign(RID, UrlMode.STREAM, 0, PARTNER)))
    with pytest.raises(UrlRejected) as info:
        signer.verify(RID, query, 1)
    assert info.value.reason == "expired"


def test_the_player_link_a_url_was_issued_through_is_signed() -> None:
    """``via`` comes back from verify; removing it, changing it or adding one to a plain URL
    breaks the signature, so a player link's reads cannot be passed off as another's."""
    signer = UrlSigner([key("k1")])
    query = dict(parse_qsl(signer.sign("rec1", UrlMode.STREAM, EXPIRES, "p1", "0123abcd0123abcd")))
    assert signer.verify("rec1", query, EXPIRES - 100).via == "0123abcd0123abcd"
    plain = dict(parse_qsl(signer.sign("rec1", UrlMode.STREAM, EXPIRES, "p1")))
    assert signer.verify("rec1", plain, EXPIRES - 100).via is None
    for altered in (
        {k: v for k, v in query.items() if k != "l"},
        {**query, "l": "ffffffffffffffff"},
        {**plain, "l": "0123abcd0123abcd"},
        {**query, "l": "bad link"},
    ):
        with pytest.raises(UrlRejected) as caught:
            signer.verify("rec1", altered, EXPIRES - 100)
        assert caught.value.reason == "invalid"
