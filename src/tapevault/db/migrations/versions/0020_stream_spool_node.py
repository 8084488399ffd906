"""Which node holds a live stream's spool, and jobs only that node may run for a while.

Revision ID: 0020
Revises: 0019

``recordings.spool_node``: the node (its data directory's id, ``DATA_DIR/node-id``) whose disk
holds a live stream's spool. ``jobs.node_until_ms`` (``jobs.node`` is 0019's): a job that only
that node may lease until then (a stream taken over by recovery: only its spool's node can
finalize every acknowledged byte; another node waits, then finalizes it from the store's copy).
NULL: any node.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, as in 0010: a batch operation would copy and drop the tables, which the
# foreign keys of a populated database refuse.


def upgrade() -> None:
    op.add_column("recordings", sa.Column("spool_node", sa.String(80), nullable=True))
    op.add_column("jobs", sa.Column("node_until_ms", sa.BigInteger, nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "node_until_ms")
    op.drop_column("recordings", "spool_node")
