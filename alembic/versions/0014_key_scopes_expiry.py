"""key scopes and expiry: admin keys that expire and reach only a selector's devices

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 00:00:00.000000

``admin_keys.expires_at`` (NULL: never) and ``admin_keys.scope`` (a selector, NULL: the whole fleet);
``campaigns.scope``, the scope of the key that created a campaign (a scoped key sees only the campaigns
of its own scope). Three nullable columns: no rewrite of either table on PostgreSQL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.storage.types

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = core.storage.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("admin_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", UTC, nullable=True))
        batch_op.add_column(sa.Column("scope", sa.String(length=1024), nullable=True))
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scope", sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("scope")
    with op.batch_alter_table("admin_keys", schema=None) as batch_op:
        batch_op.drop_column("scope")
        batch_op.drop_column("expires_at")
