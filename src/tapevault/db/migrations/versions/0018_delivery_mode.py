"""How a tenant's recordings are delivered: through the gateway or by the store directly.

Revision ID: 0018
Revises: 0017

``delivery``: ``gateway`` (tapevault's signed URLs, bytes proxied and every read logged; the
default, and what every existing tenant keeps) or ``direct`` (the object store's own presigned
URLs; see README "Object storage").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, as in 0010: a batch operation would copy and drop ``partners``, which the
# foreign keys of a populated database refuse.


def upgrade() -> None:
    op.add_column(
        "partners",
        sa.Column("delivery", sa.String(16), nullable=False, server_default="gateway"),
    )


def downgrade() -> None:
    op.drop_column("partners", "delivery")
