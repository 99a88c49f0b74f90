"""approvals of destructive actions; campaigns may wait for one (``awaiting_approval``)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 03:00:00

A new small table, and on ``campaigns`` a wider ``status`` (``awaiting_approval`` is 17 characters) with
the new value in its check. Widening a ``varchar`` rewrites nothing on PostgreSQL; SQLite's batch mode
copies the campaigns table (one row per campaign, never per device).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models.base
import core.storage.types

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = core.storage.types.UTCDateTime(timezone=True)
OLD = "status IN ('running', 'paused', 'halted', 'completed', 'cancelled')"
NEW = "status IN ('awaiting_approval', 'running', 'paused', 'halted', 'completed', 'cancelled')"


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(length=30), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.String(length=255), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=True),
        sa.Column("device_generation", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("payload", core.models.base.JSONType, nullable=True),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", UTC, nullable=True),
        sa.Column("release_at", UTC, nullable=True),
        sa.Column("ended_by", sa.String(length=200), nullable=True),
        sa.Column("ended_at", UTC, nullable=True),
        sa.CheckConstraint("kind IN ('command', 'campaign')", name=op.f("ck_approvals_kind_known")),
        sa.CheckConstraint(
            "state IN ('awaiting_approval', 'approved', 'denied', 'cancelled', 'expired', 'released')",
            name=op.f("ck_approvals_state_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    op.create_index(op.f("ix_approvals_kind_target_id"), "approvals", ["kind", "target_id"], unique=True)
    op.create_index(op.f("ix_approvals_state_release_at"), "approvals", ["state", "release_at"])
    op.create_index(op.f("ix_approvals_requested_at"), "approvals", ["requested_at"])
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_campaigns_status_known"), type_="check")
        batch_op.alter_column("status", existing_type=sa.String(length=16), type_=sa.String(length=24))
        batch_op.create_check_constraint(op.f("ck_campaigns_status_known"), NEW)


def downgrade() -> None:
    # a campaign still waiting for its approval cannot exist without the approvals: it is cancelled
    op.execute(
        "UPDATE campaigns SET status = 'cancelled', reason = 'approval_removed' WHERE status = 'awaiting_approval'"
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_campaigns_status_known"), type_="check")
        batch_op.alter_column("status", existing_type=sa.String(length=24), type_=sa.String(length=16))
        batch_op.create_check_constraint(op.f("ck_campaigns_status_known"), OLD)
    op.drop_index(op.f("ix_approvals_requested_at"), table_name="approvals")
    op.drop_index(op.f("ix_approvals_state_release_at"), table_name="approvals")
    op.drop_index(op.f("ix_approvals_kind_target_id"), table_name="approvals")
    op.drop_table("approvals")
