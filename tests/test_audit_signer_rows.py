"""Outsider probes: hostile ``audit_signers`` rows (huge values, bad base64, NUL, wrong types)
make ``tapevault audit verify`` fail with a bounded report, never a stack trace."""

from __future__ import annotations

import pytest

from tapevault.config import Settings
from tapevault.core.clock import FixedClock
from tests.signers import sign_records, sql
from tests.support import audit_verify

HUGE = "A" * 1_000_000


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        ("UPDATE audit_signers SET key_id = :v", {"v": HUGE}),
        ("UPDATE audit_signers SET vkey = :v", {"v": "tapevault/audit+00+" + HUGE}),
        ("UPDATE audit_signers SET vkey = :v", {"v": "tapevault/audit+00+A\x00A=="}),
        ("UPDATE audit_signers SET vkey = :v", {"v": "tapevault/audit+00+\u00e9\u00e9=="}),
        ("UPDATE audit_signers SET vkey = :v", {"v": b"\x00\xff"}),
        ("UPDATE audit_signers SET key_id = :v", {"v": b"\x00\xff"}),
        ("UPDATE audit_signers SET node = :v", {"v": HUGE}),
        ("UPDATE audit_signers SET node = :v", {"v": b"\x00"}),
        ("UPDATE audit_signers SET first_ms = :v", {"v": "not a number"}),
        ("UPDATE audit_signers SET first_ms = :v", {"v": 1.5e300}),
    ],
)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # PostgreSQL refuses them
def test_hostile_signer_rows_give_a_bounded_report(
    settings: Settings,
    clock: FixedClock,
    capsys: pytest.CaptureFixture[str],
    statement: str,
    params: dict[str, object],
) -> None:
    sign_records(settings, clock, 3)
    sql(settings, statement, **params)
    code, out = audit_verify(settings, capsys)
    assert code in (0, 1), out
    assert len(out) < 100_000, len(out)
