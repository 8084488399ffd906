"""A storage quota per tenant.

Revision ID: 0010
Revises: 0009

``storage_quota_bytes``: NULL follows ``TAPEVAULT_TENANT_QUOTA``; 0 is unlimited (as in
filesystem quotas); otherwise the bytes of stored audio the tenant may keep.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


# Plain ALTER TABLE (SQLite has had ADD and DROP COLUMN since 3.35): a batch operation would
# copy and drop ``partners``, which the foreign keys of a populated database refuse.


def upgrade() -> None:
    op.add_column("partners", sa.Column("storage_quota_bytes", sa.BigInteger, nullable=True))


def downgrade() -> None:
    op.drop_column("partners", "storage_quota_bytes")
