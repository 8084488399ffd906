"""Ingest: recording lifecycle columns, call ids, the job table and stream tickets.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("external_id", sa.String(64), nullable=True))
        batch.create_unique_constraint(
            "uq_sessions_partner_external", ["partner_id", "external_id"]
        )
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(
            sa.Column("source_format", sa.String(40), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("recovered", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("failure_reason", sa.Text, nullable=True))
        batch.add_column(sa.Column("channel", sa.String(16), nullable=True))
        batch.add_column(sa.Column("media_start_epoch_ms", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("writer_id", sa.String(120), nullable=True))
        batch.add_column(sa.Column("heartbeat_ms", sa.BigInteger, nullable=True))
        batch.create_index("ix_recordings_status", ["status"])
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column(
            "recording_id",
            sa.String(32),
            sa.ForeignKey("recordings.recording_id"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("run_after_ms", sa.BigInteger, nullable=False),
        sa.Column("lease_owner", sa.String(120), nullable=True),
        sa.Column("lease_expires_ms", sa.BigInteger, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("done_ms", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_jobs_due", "jobs", ["done_ms", "run_after_ms"])
    op.create_table(
        "stream_tickets",
        sa.Column("ticket_hash", sa.String(64), primary_key=True),
        sa.Column(
            "partner_id", sa.String(64), sa.ForeignKey("partners.partner_id"), nullable=False
        ),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(200), nullable=True),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stream_tickets")
    op.drop_index("ix_jobs_due", table_name="jobs")
    op.drop_table("jobs")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_index("ix_recordings_status")
        for column in (
            "heartbeat_ms",
            "writer_id",
            "media_start_epoch_ms",
            "channel",
            "failure_reason",
            "recovered",
            "source_format",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint("uq_sessions_partner_external", type_="unique")
        batch.drop_column("external_id")
