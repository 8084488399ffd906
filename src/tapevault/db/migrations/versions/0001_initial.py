"""Partners, sessions, recordings and signing keys.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partners",
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("jwt_secret", sa.Text, nullable=False),
        sa.Column("retention_seconds", sa.BigInteger, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column(
            "partner_id", sa.String(64), sa.ForeignKey("partners.partner_id"), nullable=False
        ),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("ended_ms", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_sessions_partner", "sessions", ["partner_id", "session_id"])
    op.create_table(
        "recordings",
        sa.Column("recording_id", sa.String(32), primary_key=True),
        sa.Column(
            "session_id", sa.String(64), sa.ForeignKey("sessions.session_id"), nullable=False
        ),
        sa.Column(
            "partner_id", sa.String(64), sa.ForeignKey("partners.partner_id"), nullable=False
        ),
        sa.Column("sequence_number", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("storage_key", sa.String(300), nullable=False),
        sa.Column("sample_rate", sa.Integer, nullable=False),
        sa.Column("channels", sa.Integer, nullable=False),
        sa.Column("bits_per_sample", sa.Integer, nullable=False),
        sa.Column("duration_ms", sa.BigInteger, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("session_id", "sequence_number", name="uq_recordings_session_sequence"),
    )
    op.create_table(
        "signing_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("secret_hex", sa.String(128), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.drop_table("recordings")
    op.drop_index("ix_sessions_partner", table_name="sessions")
    op.drop_table("sessions")
    op.drop_table("partners")
