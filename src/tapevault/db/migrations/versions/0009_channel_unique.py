"""One recording per call channel, enforced by the database.

Revision ID: 0009
Revises: 0004

A partial unique index on (session, channel) over the recordings that hold a call channel (any
status but failed). Concurrent uploads of one channel used to pass the application's check
together and each insert a recording; a database that already holds such duplicates keeps the
latest of each channel (the one that was being served) and marks the others failed, so the index
can be built.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0004"
branch_labels = None
depends_on = None

WHERE = "channel IN ('inbound', 'outbound') AND status <> 'failed'"
DUPLICATE = "a duplicate upload of this channel (kept the latest; migration 0009)"


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE recordings SET status = 'failed', failure_reason = :reason "
            "WHERE channel IN ('inbound', 'outbound') AND status <> 'failed' "
            "AND EXISTS (SELECT 1 FROM recordings later "
            "WHERE later.session_id = recordings.session_id "
            "AND later.channel = recordings.channel AND later.status <> 'failed' "
            "AND later.sequence_number > recordings.sequence_number)"
        ).bindparams(reason=DUPLICATE)
    )
    op.create_index(
        "uq_recordings_session_channel",
        "recordings",
        ["session_id", "channel"],
        unique=True,
        sqlite_where=sa.text(WHERE),
        postgresql_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index("uq_recordings_session_channel", table_name="recordings")
