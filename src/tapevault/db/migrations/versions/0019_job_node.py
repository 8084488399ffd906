"""Several nodes: a job may be bound to one node, and periodic tasks are leased to one node.

Revision ID: 0019
Revises: 0018

``jobs.node``: NULL (any node's worker runs the job, as every job before) or a node name
(``tapevault.ingest.liveness.node_name``): the finalization of a live stream taken over by
recovery reads the stream's spool, which is on the disk of the node that wrote it, so only that
node's workers may lease it (README "Several nodes").

``task_leases``: the retention purge and the access log's pruning run on one node at a time
(each node's worker would otherwise log and erase the same recordings twice); a task's lease is
renewed by each run of its holder and taken over by another node when it lapses.
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
    op.create_table(
        "task_leases",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(120), nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("task_leases")
    op.drop_column("jobs", "node")
