"""Finding sessions: who created a session, and the indexes of the listing's filters.

Revision ID: 0013
Revises: 0010

``sessions.provider_id`` (Suki's provider id; null for sessions made before, and for calls),
and indexes for the native listing: newest first within a tenant, alone or after a kind or
provider filter, held sessions only, and recordings by expiry for ``expiring_before``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None

HELD = "hold_set_ms IS NOT NULL"
SESSION_INDEXES = {
    "ix_sessions_partner_created": ["partner_id", "created_ms", "session_id"],
    "ix_sessions_partner_kind": ["partner_id", "kind", "created_ms", "session_id"],
    "ix_sessions_partner_provider": ["partner_id", "provider_id", "created_ms", "session_id"],
}


def upgrade() -> None:
    # Plain ALTER TABLE (SQLite has had ADD and DROP COLUMN since 3.35): a batch operation would
    # copy and drop ``sessions``, which the recordings' foreign keys refuse once there is data.
    op.add_column("sessions", sa.Column("provider_id", sa.String(200), nullable=True))
    for name, columns in SESSION_INDEXES.items():
        op.create_index(name, "sessions", columns)
    op.create_index(
        "ix_sessions_partner_held",
        "sessions",
        ["partner_id", "created_ms", "session_id"],
        sqlite_where=sa.text(HELD),
        postgresql_where=sa.text(HELD),
    )
    op.create_index("ix_recordings_expires_partner", "recordings", ["expires_ms", "partner_id"])


def downgrade() -> None:
    op.drop_index("ix_recordings_expires_partner", table_name="recordings")
    op.drop_index("ix_sessions_partner_held", table_name="sessions")
    for name in SESSION_INDEXES:
        op.drop_index(name, table_name="sessions")
    op.drop_column("sessions", "provider_id")
