"""profile rollouts: a campaign of kind ``profile``, and devices held at a profile's version

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 06:10:00.000000

``campaigns`` gains ``kind`` (``command``, the default every existing row takes, or ``profile``) and, for a
profile rollout, ``profile_name``, ``from_version`` and ``to_version``. ``device_profiles`` gains
``version``: NULL (every existing row) means the device follows the profile's current version; a number
holds it at that version while a rollout has not reached it, and 0 holds a device the new version will
match out of the profile until then. Nullable columns and one with a constant default: no rewrite on
PostgreSQL 11+.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="command", nullable=False))
        batch_op.add_column(sa.Column("profile_name", sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column("from_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("to_version", sa.Integer(), nullable=True))
    with op.batch_alter_table("device_profiles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_profiles", schema=None) as batch_op:
        batch_op.drop_column("version")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("to_version")
        batch_op.drop_column("from_version")
        batch_op.drop_column("profile_name")
        batch_op.drop_column("kind")
