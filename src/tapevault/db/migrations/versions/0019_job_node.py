"""A job may be bound to one node: the one whose disk holds what it reads.

Revision ID: 0019
Revises: 0018

``jobs.node``: NULL (any node's worker runs the job, as every job before) or a node name
(``tapevault.ingest.liveness.node_name``): the finalization of a live stream taken over by
recovery reads the stream's spool, which is on the disk of the node that wrote it, so only that
node's workers may lease it (README "Several nodes").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("node", sa.String(80), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "node")
