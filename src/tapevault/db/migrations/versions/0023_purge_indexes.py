"""Indexes that keep the retention purge's reads small in a vault that has run for years.

Revision ID: 0023
Revises: 0022

``ix_recordings_due``: recordings that may still be purged (available or failed) by expiry.
The purge asked for "expired by now, available or failed, oldest first" through
``ix_recordings_expires_partner``, whose oldest entries are the recordings purged long ago
(tombstones keep their expiry): every batch of 500 walked every tombstone first (200,000 rows,
0.37 s, in a vault of a million recordings; 2 million at the issue's scale).

``ix_recordings_unremoved``: tombstones whose audio is still to be removed (a crash came in
between; normally none). Each purge first looks for them, and through ``ix_recordings_status``
read every tombstone to find none.

Both partial, with the predicates the queries spell out (``schema.DUE_WHERE`` and
``schema.UNREMOVED_WHERE``), literally, so PostgreSQL can match them in a generic plan too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

DUE = "status IN ('available', 'failed')"
UNREMOVED = "removed_ms IS NULL AND status IN ('expired', 'deleted')"


def upgrade() -> None:
    op.create_index(
        "ix_recordings_due",
        "recordings",
        ["expires_ms"],
        sqlite_where=sa.text(DUE),
        postgresql_where=sa.text(DUE),
    )
    op.create_index(
        "ix_recordings_unremoved",
        "recordings",
        ["recording_id"],
        sqlite_where=sa.text(UNREMOVED),
        postgresql_where=sa.text(UNREMOVED),
    )


def downgrade() -> None:
    op.drop_index("ix_recordings_unremoved", table_name="recordings")
    op.drop_index("ix_recordings_due", table_name="recordings")
