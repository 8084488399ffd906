"""Sending webhooks: the receiver-address policy (SSRF), the signed HTTP POST, and the worker
loop that leases deliveries and records what became of them. The rules are core/webhooks.py;
events are written by the repository (db/outbox.py).

``delivery_outcome`` is called once per attempt with its outcome's label (``delivered``,
``gone``, ``refused``, ``timeout``, ``error``, ``http_4xx``, ``http_5xx``...): the hook a
metrics counter attaches to (``on_outcome``).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

_lock = threading.Lock()
_listeners: list[Callable[[str], None]] = []
OUTCOMES: Counter[str] = Counter()  # this process's attempts by outcome, since it started


def on_outcome(listener: Callable[[str], None]) -> None:
    """Call ``listener(outcome)`` after every delivery attempt of this process (metrics)."""
    with _lock:
        _listeners.append(listener)


def delivery_outcome(outcome: str) -> None:
    with _lock:
        OUTCOMES[outcome] += 1
        listeners = list(_listeners)
    for listener in listeners:
        listener(outcome)
