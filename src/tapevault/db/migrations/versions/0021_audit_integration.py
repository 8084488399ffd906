"""The access log off the request's path: durable appends, one integrator, a Merkle tree.

Revision ID: 0021
Revises: 0020

``audit_incoming`` holds records made durable by requests and not yet integrated;
``audit_tree`` the RFC 9162 tree's perfect subtrees; ``audit_state`` where the tree starts and
how many leaves it has; ``audit_checkpoints`` the signed note over the tree. Existing records
keep their seqs and chain hashes (``tapevault audit verify`` checks them as before); the tree
starts at the retained log's first record and the integrator builds it over them a chunk at a
time after the upgrade, signing tree notes once it has caught up.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_incoming",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("entry", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "audit_tree",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    # Plain ADD COLUMN (as 0018): no table copies of a populated log.
    op.add_column(
        "audit_state",
        sa.Column("tree_first_seq", sa.BigInteger, nullable=False, server_default="1"),
    )
    op.add_column(
        "audit_state", sa.Column("tree_size", sa.BigInteger, nullable=False, server_default="0")
    )
    op.execute("UPDATE audit_state SET tree_first_seq = first_seq, tree_size = 0")
    op.add_column("audit_checkpoints", sa.Column("tree_size", sa.BigInteger, nullable=True))
    op.add_column("audit_checkpoints", sa.Column("root_hash", sa.String(64), nullable=True))
    op.add_column("audit_checkpoints", sa.Column("note_signature", sa.String(128), nullable=True))


def downgrade() -> None:
    # Records still waiting would be lost by a downgrade: refuse rather than drop them.
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM audit_incoming")).scalar():
        raise RuntimeError("audit_incoming holds records not yet integrated: start a server once")
    for column in ("note_signature", "root_hash", "tree_size"):
        op.drop_column("audit_checkpoints", column)
    op.drop_column("audit_state", "tree_size")
    op.drop_column("audit_state", "tree_first_seq")
    op.drop_table("audit_tree")
    op.drop_table("audit_incoming")
