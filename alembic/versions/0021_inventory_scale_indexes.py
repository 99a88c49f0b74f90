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

from core.storage.migrations import create_index_concurrently, drop_index_concurrently


revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: built without blocking writers on PostgreSQL (6 M rows at 100,000 devices × 60 apps): an inventory report
#: keeps writing while the index builds
NEW = "ix_device_apps_package_version_code_version_name_device_id"
OLD = "ix_device_apps_package_version_code_device_id"
REVOKED = "revoked_at IS NOT NULL"


def upgrade() -> None:
    create_index_concurrently(NEW, "device_apps", ["package", "version_code", "version_name", "device_id"])
    drop_index_concurrently(OLD, "device_apps")
    create_index_concurrently(
        "ix_devices_revoked", "devices", ["id"], postgresql_where=sa.text(REVOKED), sqlite_where=sa.text(REVOKED)
    )


def downgrade() -> None:
    drop_index_concurrently("ix_devices_revoked", "devices")
    create_index_concurrently(OLD, "device_apps", ["package", "version_code", "device_id"])
    drop_index_concurrently(NEW, "device_apps")
