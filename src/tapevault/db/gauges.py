"""Gauges read from the database at scrape time: one aggregate query, on an index."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from tapevault.db.schema import jobs


def job_queue(engine: Engine) -> tuple[int, int | None]:
    """(jobs not done — waiting, running or backing off —, the oldest one's creation time in
    ms or None). Reads ``ix_jobs_due`` (done_ms first): the cost follows the unfinished jobs,
    never the finished history."""
    query = select(func.count(), func.min(jobs.c.created_ms)).where(jobs.c.done_ms.is_(None))
    with engine.connect() as conn:
        count, oldest = conn.execute(query).one()
    return int(count), None if oldest is None else int(oldest)
