"""Player links: a session's page for people, opened by a secret kept only as its SHA-256.

Revision ID: 0016
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "player_links",
        sa.Column("link_id", sa.String(32), primary_key=True),
        sa.Column(
            "partner_id", sa.String(64), sa.ForeignKey("partners.partner_id"), nullable=False
        ),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.Column("revoked_ms", sa.BigInteger, nullable=True),
    )
    op.create_index(
        "ix_player_links_partner_session",
        "player_links",
        ["partner_id", "session_id", "created_ms"],
    )


def downgrade() -> None:
    op.drop_index("ix_player_links_partner_session", table_name="player_links")
    op.drop_table("player_links")
