"""The one grammar of storage keys, checked by every store before it touches anything.

A key is at most eight ``/``-separated segments of letters, digits, ``_``, ``.`` and ``-``,
each starting with a letter, digit or ``_`` and at most 128 characters long. So no key is
absolute, empty, or contains ``.``/``..`` segments, a backslash, a NUL or a control character:
on a filesystem ``root/key`` stays below ``root``, and in a bucket a key cannot reach outside the
configured prefix or mean something else to a provider that normalises paths.
"""

from __future__ import annotations

import re

from tapevault.errors import StorageError

_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}){0,7}")
MAX_KEY_LENGTH = 8 * 129


def check_key(key: str) -> str:
    """``key`` itself when it is a valid storage key; ``StorageError`` otherwise."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or ".." in key:
        raise StorageError(f"invalid storage key {key!r}"[:300])
    return key
