"""Access-log entries and a checkpoint signer the audit test modules share: varied entries (some
fields None, ranges, nested detail, non-ASCII text), a forged one, and a fixed signing key."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tapevault.core.audit import AuditEntry
from tapevault.core.checkpoints import CheckpointSigner

SIGNER = CheckpointSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
KEYS = {SIGNER.key_id: SIGNER.public_key}
UA = "Mozilla/5.0 (Ünïcødé; 日本語) tapevault-tests 🎧"


def make_entry(i: int) -> AuditEntry:
    """A varied entry: some fields None, some ranges, some detail."""
    actions = ("media.playback", "recording.urls_issue", "auth.failure", "session.read")
    return AuditEntry(
        at_ms=1_800_000_000_000 + i * 250,
        action=actions[i % len(actions)],
        status=(200, 206, 401, 410, 503)[i % 5],
        tenant_id=None if i % 7 == 0 else f"tenant-{i % 3}",
        actor_kind=("suki_token", "kore_jwt", "api_key", "signed_url", "cli", "system")[i % 6],
        actor_id=f"jti-{i:04d}",
        provider_id=None if i % 2 else f"prov-{i}",
        session_id=f"sess-{i // 5}",
        recording_id=None if i % 4 == 3 else f"01KFJZTJWZH28GRHQXVCGW{i:04d}",
        mode=("s", "d", None)[i % 3],
        ranges=((0, 1023), (2048, 4095 + i)) if i % 3 == 0 else ((i, i + 99),) if i % 3 else (),
        bytes_sent=i * 1024,
        error="token expired" if i % 5 == 2 else None,
        client_ip=f"203.0.113.{i}",
        user_agent=UA if i % 2 == 0 else None,
        request_id=f"req-{i}",
        detail={"n": i, "ok": i % 2 == 0, "none": None, "tags": ["a", f"t{i}"], "z": {"k": [1, 2]}}
        if i % 4 == 0
        else None,
    )


FAKE = AuditEntry(at_ms=1_800_000_000_001, action="media.playback", status=200, actor_id="evil")
