"""Retention overrides, legal holds, tombstones, and the tamper-evident access log.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("retention_seconds", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("hold_reason", sa.Text, nullable=True))
        batch.add_column(sa.Column("hold_by", sa.String(200), nullable=True))
        batch.add_column(sa.Column("hold_set_ms", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("deleted_ms", sa.BigInteger, nullable=True))
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("retention_seconds", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("purged_ms", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("purge_reason", sa.String(16), nullable=True))
        batch.add_column(sa.Column("retention_policy", sa.String(16), nullable=True))
        batch.add_column(sa.Column("deleted_by", sa.String(200), nullable=True))
        batch.add_column(sa.Column("removed_ms", sa.BigInteger, nullable=True))
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("actor_id", sa.String(200), nullable=True),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("recording_id", sa.String(64), nullable=True),
        sa.Column("entry", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_tenant_seq", "audit_log", ["tenant_id", "seq"])
    op.create_index("ix_audit_recording", "audit_log", ["recording_id"])
    op.create_index("ix_audit_session", "audit_log", ["session_id"])
    state = op.create_table(
        "audit_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("head_seq", sa.BigInteger, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("first_prev_hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(
        state,
        [
            {
                "id": 1,
                "head_seq": 0,
                "head_hash": GENESIS,
                "first_seq": 1,
                "first_prev_hash": GENESIS,
            }
        ],
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    )
    epoch = op.create_table(
        "cache_epoch",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(epoch, [{"id": 1, "epoch": 0}])
    op.create_table(
        "audit_pending",
        sa.Column("playback_id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(120), nullable=False),
        sa.Column("entry", sa.Text, nullable=False),
        sa.Column("opened_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_pending")
    op.drop_table("cache_epoch")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_state")
    for index in ("ix_audit_session", "ix_audit_recording", "ix_audit_tenant_seq"):
        op.drop_index(index, table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("recordings") as batch:
        for column in (
            "removed_ms",
            "deleted_by",
            "retention_policy",
            "purge_reason",
            "purged_ms",
            "retention_seconds",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("sessions") as batch:
        for column in ("deleted_ms", "hold_set_ms", "hold_by", "hold_reason", "retention_seconds"):
            batch.drop_column(column)
