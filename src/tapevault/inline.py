"""Database-free attempts: answer on the event loop what memory can answer.

On PostgreSQL every metadata call runs in a worker thread (a round trip must never block the
event loop), and the hop costs more than the work when the answer is already in memory: a
verified token, a settled session in the serving cache, the signing key loaded. py-spy put a
quarter of the loop's time under load in that hop (BENCHMARKS.md, issue 14). So the hot calls
(``AppContext.hot``) first run inline under ``database_free``; the two places a database
connection is taken (``FastReader`` and the engine's pool) call ``check`` first, which raises
``NeedsDatabase`` inside such an attempt, before any connection is touched. The call is then run
again in a thread from the start. Only read-only calls are attempted this way: running one again
must change nothing.

``NeedsDatabase`` is a ``BaseException``, like ``KeyboardInterrupt``, so that no ``except
Exception`` on the way (a verifier turning lookup failures into 401) can take it for an error.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class NeedsDatabase(BaseException):
    """Raised inside ``database_free`` where a database connection would be taken."""


class _State(threading.local):
    forbidden = False


_state = _State()


def check() -> None:
    """Called before a database connection is taken: raises ``NeedsDatabase`` inside an attempt
    (this thread only; every other thread goes on)."""
    if _state.forbidden:
        raise NeedsDatabase


@contextmanager
def database_free() -> Iterator[None]:
    """Within: this thread may not take a database connection."""
    before, _state.forbidden = _state.forbidden, True
    try:
        yield
    finally:
        _state.forbidden = before
