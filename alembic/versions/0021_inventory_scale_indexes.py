"""inventory at scale: the fleet's app counts from an index alone

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 06:10:00.000000

``device_apps``' (package, version_code, device_id) index becomes (package, version_code, version_name,
device_id): ``apps list`` and ``apps show`` count devices per version, with the version's name, by an
index-only scan instead of reading 6 M heap rows; ``@app(...)`` probes use its leading columns as before.
``devices`` gains a partial index on the revoked devices, which the unfiltered app counts leave out.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device_apps", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_apps_package_version_code_version_name_device_id"),
            ["package", "version_code", "version_name", "device_id"],
            unique=False,
        )
        batch_op.drop_index(batch_op.f("ix_device_apps_package_version_code_device_id"))
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_devices_revoked",
            ["id"],
            unique=False,
            postgresql_where=sa.text("revoked_at IS NOT NULL"),
            sqlite_where=sa.text("revoked_at IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_revoked")
    with op.batch_alter_table("device_apps", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_apps_package_version_code_device_id"),
            ["package", "version_code", "device_id"],
            unique=False,
        )
        batch_op.drop_index(batch_op.f("ix_device_apps_package_version_code_version_name_device_id"))
