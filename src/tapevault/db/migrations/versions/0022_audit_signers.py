"""The access log's signers: every checkpoint key's public half, recorded when it first signs.

Revision ID: 0022
Revises: 0021

``audit_signers``: one row per Ed25519 key that signed a checkpoint (the integrator's role moves
between nodes, and each node may have its own key file): its key id, its verifier key in the
C2SP signed-note form, the node that first signed with it and when. ``tapevault audit verify``
trusts these keys only as a convenience it reports as such: anyone who can write the database
can add a row (README, "The access log").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_signers",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("vkey", sa.String(200), nullable=False),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("first_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_signers")
