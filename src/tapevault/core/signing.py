"""Signed URLs: HMAC-SHA256 over everything that selects the bytes or the behaviour.

A URL carries the recording (in its path), the mode, the expiry, the partner, the key id and the
signature. Twilio stream URLs are signed the same way, with their own mode and subject, so one
key ring (rotation, removal) governs every URL tapevault hands out. Every field is checked
against a strict character set *before* the signature is computed, so no two different field
tuples share a canonical string, and numbers must be written canonically (no leading zeros), so
no signed URL has a second spelling that also verifies. Keys rotate: the newest key signs, every
listed key verifies, and a removed key's URLs stop working at once.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from tapevault.core.model import SigningKey
from tapevault.errors import UrlRejected
from tapevault.numbers import is_canonical


class UrlMode(StrEnum):
    """What a URL is for. Both audio modes honour Range; download adds Content-Disposition:
    attachment. METADATA grants a call's metadata document (``/media/{session_id}.json``), never
    audio; TWILIO grants opening a Twilio media stream. The mode is signed, so one kind of URL
    cannot be turned into another."""

    STREAM = "s"
    DOWNLOAD = "d"
    METADATA = "j"
    TWILIO = "t"  # opens a Twilio media stream for the tenant (``TWILIO_SUBJECT``), never audio
    PEAKS = "p"  # a recording's waveform peaks (``/media/{recording_id}.peaks.json``), never audio


AUDIO_MODES = frozenset({UrlMode.STREAM, UrlMode.DOWNLOAD})
# What a Twilio stream URL grants, in the place of a recording id: the route, not a recording.
TWILIO_SUBJECT = "twilio-media-stream"


@dataclass(frozen=True, slots=True)
class UrlGrant:
    """The verified content of a signed URL."""

    recording_id: str
    mode: UrlMode
    expires: int
    partner_id: str
    key_id: str
    # The player link a URL was issued through (``l=``), so that its reads are logged as that
    # link's; signed like every other field, so it can be neither removed nor swapped.
    via: str | None = None


_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")
_MODES = frozenset(mode.value for mode in UrlMode)

NEW_URL_HINT = "request a new URL from the recording endpoint"


def new_signing_key(key_id: str | None, created_ms: int) -> SigningKey:
    """A fresh 256-bit key; its id is public (it travels in every URL)."""
    return SigningKey(
        key_id=key_id or secrets.token_hex(4), secret=secrets.token_bytes(32), created_ms=created_ms
    )


def _canonical(grant: UrlGrant) -> bytes:
    fields = (
        f"{grant.recording_id}\n{grant.mode.value}\n"
        f"{grant.expires}\n{grant.partner_id}\n{grant.key_id}"
    )
    if grant.via is None:
        return f"tapevault-media-v1\n{fields}".encode()
    # Its own version line: a URL with ``via`` and one without never share a canonical string.
    return f"tapevault-media-v2\n{fields}\n{grant.via}".encode()


def _mac(secret: bytes, grant: UrlGrant) -> str:
    digest = hmac.digest(secret, _canonical(grant), "sha256")  # one C call, no HMAC object
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class UrlSigner:
    """Signs with the newest key and verifies with any known key."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self.keys = tuple(keys)
        self._signing = keys[0]
        self._by_id = {key.key_id: key for key in keys}
        # Signatures already checked: a playback presents the same URL for every Range request.
        # The cache lives as long as this signer, which is replaced whenever the keys change, so
        # a removed key's URLs stop verifying as before; expiry is checked on every request.
        self._verified: dict[tuple[str, ...], UrlGrant] = {}

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def sign(
        self,
        recording_id: str,
        mode: UrlMode,
        expires: int,
        partner_id: str,
        via: str | None = None,
    ) -> str:
        """The query string (without '?') that grants ``mode`` access until ``expires``;
        ``via``: the player link it is issued through."""
        grant = UrlGrant(recording_id, mode, expires, partner_id, self._signing.key_id, via)
        signature = _mac(self._signing.secret, grant)
        link = "" if via is None else f"&l={via}"
        return f"m={mode.value}&e={expires}&p={partner_id}&k={grant.key_id}{link}&s={signature}"

    def verify(self, recording_id: str, query: Mapping[str, str], now: float) -> UrlGrant:
        """Check a URL's signature, then its expiry. Raises ``UrlRejected``.

        The signature is checked first so that an altered expiry reads as "invalid", never as
        "expired": the answer must not tell an attacker which field they changed.
        """
        mode_text = query.get("m", "")
        expires_text = query.get("e", "")
        partner_id = query.get("p", "")
        key_id = query.get("k", "")
        signature = query.get("s", "")
        via = query.get("l")
        seen = (recording_id, mode_text, expires_text, partner_id, key_id, signature, via or "")
        grant = self._verified.get(seen)
        if grant is None:
            grant = self._check(
                recording_id, mode_text, expires_text, partner_id, key_id, signature, via
            )
            if len(self._verified) >= 100_000:
                self._verified.clear()
            self._verified[seen] = grant
        if now > grant.expires:
            raise UrlRejected(
                "expired",
                f"The URL expired at {grant.expires} (server time {int(now)}); {NEW_URL_HINT}.",
            )
        return grant

    def _check(
        self,
        recording_id: str,
        mode_text: str,
        expires_text: str,
        partner_id: str,
        key_id: str,
        signature: str,
        via: str | None = None,
    ) -> UrlGrant:
        if not (
            mode_text in _MODES
            and is_canonical(expires_text, 12)
            and _TOKEN.fullmatch(partner_id)
            and _TOKEN.fullmatch(key_id)
            and _SIGNATURE.fullmatch(signature)
            and _TOKEN.fullmatch(recording_id)
            and (via is None or _TOKEN.fullmatch(via))
        ):
            raise UrlRejected("invalid", f"The URL is malformed or incomplete; {NEW_URL_HINT}.")
        key = self._by_id.get(key_id)
        grant = UrlGrant(
            recording_id, UrlMode(mode_text), int(expires_text), partner_id, key_id, via
        )
        if key is None or not hmac.compare_digest(_mac(key.secret, grant), signature):
            raise UrlRejected(
                "invalid", f"The URL signature does not match; it was altered. {NEW_URL_HINT}."
            )
        return grant
