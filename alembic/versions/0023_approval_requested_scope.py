"""An approval keeps its requester's scope

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 10:30:00.000000

``approvals.requested_scope``: the scope of the key or person who asked for a destructive command
(``store=42``), so that its release sends nothing to a device that has left that scope meanwhile. Nullable:
unscoped requesters, campaigns (a campaign keeps its own scope) and approvals asked for before this
revision have none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0023"
down_revision: str | Sequence[str] | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requested_scope", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_column("requested_scope")
