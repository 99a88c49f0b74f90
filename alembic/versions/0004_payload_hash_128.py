"""payload_hash holds up to 128 characters; finished commands never pushed are fcm_status skipped

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 20:00:00

The seed's helper takes the caller's digest of the payload (1-128 characters, not only SHA-256 hex:
``record_fcm_dispatch(..., payload_hash="abc123")`` must work as written). On PostgreSQL widening a
``varchar`` is a catalog change (no table rewrite). A downgrade narrows it back and fails, writing
nothing, while a stored hash is longer than 64 characters.

A command that finished (acked, failed, expired) before any push was sent has ``fcm_status`` ``skipped``
from now on, not ``pending``; the rows stored before are settled here (a downgrade leaves them skipped,
a value the older code knows).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fcm_dispatches", schema=None) as batch_op:
        batch_op.alter_column(
            "payload_hash", existing_type=sa.String(64), type_=sa.String(128), existing_nullable=False
        )
    op.execute(
        "UPDATE fcm_dispatches SET fcm_status = 'skipped' "
        "WHERE fcm_status = 'pending' AND status IN ('acked', 'failed', 'expired')"
    )


def downgrade() -> None:
    with op.batch_alter_table("fcm_dispatches", schema=None) as batch_op:
        batch_op.alter_column(
            "payload_hash", existing_type=sa.String(128), type_=sa.String(64), existing_nullable=False
        )
