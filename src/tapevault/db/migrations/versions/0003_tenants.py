"""Tenants with three dialects' credentials, workspace API keys, call attributes.

Revision ID: 0003
Revises: 0002

Existing partners become tenants: each gets a workspace id, a Kore bot id, client id and client
secret generated here (printed by nothing: an operator reads them with ``tapevault tenant show``).
"""

from __future__ import annotations

import secrets
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_NEW_COLUMNS = ("workspace_id", "bot_id", "kore_client_id", "kore_client_secret")


def upgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.add_column(sa.Column("workspace_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("bot_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("kore_client_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("kore_client_secret", sa.Text, nullable=True))
        batch.add_column(sa.Column("suki_public_keys", sa.Text, nullable=True))
        batch.add_column(
            sa.Column("recording_enabled", sa.Boolean, nullable=False, server_default=sa.true())
        )
    partners = sa.table("partners", *(sa.column(c) for c in ("partner_id", *_NEW_COLUMNS)))
    conn = op.get_bind()
    for (partner_id,) in conn.execute(sa.select(partners.c.partner_id)).all():
        conn.execute(
            partners.update()
            .where(partners.c.partner_id == partner_id)
            .values(
                workspace_id=str(uuid.uuid4()),
                bot_id=f"st-{uuid.uuid4()}",
                kore_client_id=f"cs-{uuid.uuid4()}",
                kore_client_secret=secrets.token_urlsafe(32),
            )
        )
    with op.batch_alter_table("partners") as batch:
        for column in _NEW_COLUMNS:
            batch.alter_column(column, nullable=False)
        batch.create_unique_constraint("uq_partners_workspace_id", ["workspace_id"])
        batch.create_unique_constraint("uq_partners_bot_id", ["bot_id"])
        batch.create_unique_constraint("uq_partners_kore_client_id", ["kore_client_id"])
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("attributes", sa.Text, nullable=True))
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column(
            "partner_id", sa.String(64), sa.ForeignKey("partners.partner_id"), nullable=False
        ),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=True),
        sa.Column("revoked_ms", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_partner", "api_keys", ["partner_id"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_partner", table_name="api_keys")
    op.drop_table("api_keys")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("attributes")
    with op.batch_alter_table("partners") as batch:
        batch.drop_constraint("uq_partners_kore_client_id", type_="unique")
        batch.drop_constraint("uq_partners_bot_id", type_="unique")
        batch.drop_constraint("uq_partners_workspace_id", type_="unique")
        for column in (*_NEW_COLUMNS, "suki_public_keys", "recording_enabled"):
            batch.drop_column(column)
