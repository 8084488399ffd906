"""A storage quota per tenant.

Revision ID: 0010
Revises: 0004

``storage_quota_bytes``: NULL follows ``TAPEVAULT_TENANT_QUOTA``; 0 is unlimited (as in
filesystem quotas); otherwise the bytes of stored audio the tenant may keep.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.add_column(sa.Column("storage_quota_bytes", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.drop_column("storage_quota_bytes")
