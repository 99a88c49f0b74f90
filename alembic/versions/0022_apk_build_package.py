"""APK builds know their package

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 07:15:00.000000

``apk_builds.package``: the package an uploaded APK's manifest declares, read at upload, so that
``profiles apply`` refuses a build that installs another package than its app entry's. Nullable: builds
uploaded before this revision (and APKs whose manifest cannot be read) have none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0022"
down_revision: str | Sequence[str] | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("apk_builds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("package", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("apk_builds", schema=None) as batch_op:
        batch_op.drop_column("package")
