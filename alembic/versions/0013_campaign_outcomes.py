"""campaign outcomes: success_when, outcome timeouts, skipped/succeeded/failed targets (issue #23)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 03:00:00

* ``campaigns.success_when`` (a selector), ``campaigns.outcome_timeout_seconds`` and ``outcome_swept_at``;
* ``campaign_targets.reason`` and ``outcome_at``; a target's ``state`` may also be ``skipped``,
  ``succeeded`` or ``failed``.

Nullable columns only (catalog changes on PostgreSQL, no table rewrite); the wider check constraint is
added ``NOT VALID`` and validated afterwards, so no lock blocks writers while it scans.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.storage.types

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATE_CHECK = "ck_campaign_targets_state_known"
OLD_STATES = "state IN ('queued', 'cancelled')"
NEW_STATES = "state IN ('queued', 'cancelled', 'skipped', 'succeeded', 'failed')"


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("success_when", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("outcome_timeout_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("outcome_swept_at", core.storage.types.UTCDateTime(timezone=True), nullable=True))
    columns = (
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("outcome_at", core.storage.types.UTCDateTime(timezone=True), nullable=True),
    )
    if op.get_bind().dialect.name == "postgresql":
        for column in columns:
            op.add_column("campaign_targets", column)
        op.drop_constraint(op.f(STATE_CHECK), "campaign_targets", type_="check")
        op.execute(f"ALTER TABLE campaign_targets ADD CONSTRAINT {STATE_CHECK} CHECK ({NEW_STATES}) NOT VALID")
        op.execute(f"ALTER TABLE campaign_targets VALIDATE CONSTRAINT {STATE_CHECK}")
    else:
        with op.batch_alter_table("campaign_targets", schema=None) as batch_op:
            for column in columns:
                batch_op.add_column(column)
            batch_op.drop_constraint(op.f(STATE_CHECK), type_="check")
            batch_op.create_check_constraint(op.f(STATE_CHECK), sa.text(NEW_STATES))


def downgrade() -> None:
    # the old schema knows no outcome: a skipped target never got a command (cancelled), a decided one is
    # queued again (its command's status says how it went)
    op.execute("UPDATE campaign_targets SET state = 'cancelled' WHERE state = 'skipped'")
    op.execute("UPDATE campaign_targets SET state = 'queued' WHERE state IN ('succeeded', 'failed')")
    with op.batch_alter_table("campaign_targets", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(STATE_CHECK), type_="check")
        batch_op.create_check_constraint(op.f(STATE_CHECK), sa.text(OLD_STATES))
        batch_op.drop_column("outcome_at")
        batch_op.drop_column("reason")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("outcome_swept_at")
        batch_op.drop_column("outcome_timeout_seconds")
        batch_op.drop_column("success_when")
