"""A recording's access history in a log of millions of records: the record indexes by
recording and by session carry ``seq``.

Revision ID: 0024
Revises: 0023

``GET /api/v1/recordings/{id}/access`` asks for the recording's records and its session's
records without a recording, in ``seq`` order. With ``ix_audit_recording (recording_id)`` and
``ix_audit_session (session_id)`` SQLite walked the tenant's ``(tenant_id, seq)`` index instead
(the order came free), reading every record of the tenant: 0.6-0.9 s for a big tenant of a
vault with a million records. ``(recording_id, seq)`` and ``(session_id, seq)`` give each half
of the history in order, so the query (``db/auditstore.py``) takes the first page of each and
merges them. They replace the single-column indexes (each record still updates two of them).
Building them reads ``audit_log`` once (minutes at tens of millions of records).
"""

from __future__ import annotations

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_recording_seq", "audit_log", ["recording_id", "seq"])
    op.create_index("ix_audit_session_seq", "audit_log", ["session_id", "seq"])
    op.drop_index("ix_audit_recording", table_name="audit_log")
    op.drop_index("ix_audit_session", table_name="audit_log")


def downgrade() -> None:
    op.create_index("ix_audit_recording", "audit_log", ["recording_id"])
    op.create_index("ix_audit_session", "audit_log", ["session_id"])
    op.drop_index("ix_audit_session_seq", table_name="audit_log")
    op.drop_index("ix_audit_recording_seq", table_name="audit_log")
