"""Time claims of a JWT, read strictly.

PyJWT parses JSON that may carry ``NaN``, ``Infinity`` or ``1e308`` as a number: compared with a
clock, NaN is never "past" and Infinity never arrives, which would make a token never expire.
A time claim here is a finite number of seconds within a sane range, or the token is refused.
"""

from __future__ import annotations

import math

MAX_SECONDS = 1e11  # about the year 5138: beyond that a "time" is an attack, not a date


def seconds(value: object) -> float | None:
    """The claim as Unix seconds, or None when it is not a usable time."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or abs(value) > MAX_SECONDS:
        return None
    return float(value)
