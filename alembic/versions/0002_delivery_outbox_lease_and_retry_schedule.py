"""delivery outbox: lease and retry schedule

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 18:56:00.570947
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.storage.types
from core.storage.migrations import create_index_concurrently, drop_index_concurrently


revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # IF NOT EXISTS: the index below commits these first, so a run interrupted during the index build
        # must be able to run again
        op.execute(
            "ALTER TABLE fcm_dispatches ADD COLUMN IF NOT EXISTS next_attempt_at TIMESTAMP WITH TIME ZONE, "
            "ADD COLUMN IF NOT EXISTS lease_until TIMESTAMP WITH TIME ZONE"
        )
    else:
        with op.batch_alter_table("fcm_dispatches", schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("next_attempt_at", core.storage.types.UTCDateTime(timezone=True), nullable=True)
            )
            batch_op.add_column(sa.Column("lease_until", core.storage.types.UTCDateTime(timezone=True), nullable=True))
    # fcm_dispatches keeps 90 days of commands: on PostgreSQL the index is built without blocking writers
    # (last in this migration: it commits the columns above first; see docs/migrations.md)
    create_index_concurrently(
        op.f("ix_fcm_dispatches_fcm_status_next_attempt_at"), "fcm_dispatches", ["fcm_status", "next_attempt_at"]
    )


def downgrade() -> None:
    drop_index_concurrently(op.f("ix_fcm_dispatches_fcm_status_next_attempt_at"), "fcm_dispatches")
    with op.batch_alter_table("fcm_dispatches", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("next_attempt_at")
