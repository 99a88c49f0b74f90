"""device inventory: what each device reports it has, and its app-change history

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 02:41:27.954644

``device_inventory`` (one row per device: the report's hash and device fields), ``device_apps`` (one row
per installed package; the (package, version_code, device_id) index serves ``@app(...)`` selector
probes and the per-package version histogram) and ``device_app_changes`` (kept
``NEXMDM_APP_CHANGE_RETENTION_DAYS``). ``devices`` gains two nullable columns (no rewrite on either
database): ``inventory_hash``, read by the statement the heartbeat already runs, and
``inventory_seen_at``, when the server last knew the inventory to be current.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.storage.types


revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_app_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("package", sa.String(length=255), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("from_version_code", sa.BigInteger(), nullable=True),
        sa.Column("to_version_code", sa.BigInteger(), nullable=True),
        sa.Column("at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "change IN ('installed', 'updated', 'downgraded', 'removed')",
            name=op.f("ck_device_app_changes_change_known"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_app_changes_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_app_changes")),
    )
    with op.batch_alter_table("device_app_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_app_changes_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_device_app_changes_device_id_id"), ["device_id", "id"], unique=False)

    op.create_table(
        "device_apps",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("package", sa.String(length=255), nullable=False),
        sa.Column("version_code", sa.BigInteger(), nullable=False),
        sa.Column("version_name", sa.String(length=64), nullable=True),
        sa.Column("installer", sa.String(length=255), nullable=True),
        sa.Column("system", sa.Boolean(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=True),
        sa.Column("signing_sha256", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_apps_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", "package", name=op.f("pk_device_apps")),
    )
    with op.batch_alter_table("device_apps", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_apps_package_version_code_device_id"),
            ["package", "version_code", "device_id"],
            unique=False,
        )

    op.create_table(
        "device_inventory",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("manufacturer", sa.String(length=128), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("os_version", sa.String(length=64), nullable=True),
        sa.Column("api_level", sa.Integer(), nullable=True),
        sa.Column("security_patch", sa.Date(), nullable=True),
        sa.Column("build_fingerprint", sa.String(length=256), nullable=True),
        sa.Column("storage_total_mb", sa.BigInteger(), nullable=True),
        sa.Column("storage_free_mb", sa.BigInteger(), nullable=True),
        sa.Column("ram_mb", sa.BigInteger(), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("serial", sa.String(length=128), nullable=True),
        sa.Column("serial_withheld", sa.Boolean(), nullable=False),
        sa.Column("app_count", sa.Integer(), nullable=False),
        sa.Column("reported_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_inventory_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_inventory")),
    )
    with op.batch_alter_table("device_inventory", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_inventory_api_level"), ["api_level"], unique=False)
        batch_op.create_index(batch_op.f("ix_device_inventory_manufacturer"), ["manufacturer"], unique=False)

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inventory_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("inventory_seen_at", core.storage.types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("inventory_seen_at")
        batch_op.drop_column("inventory_hash")

    with op.batch_alter_table("device_inventory", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_inventory_manufacturer"))
        batch_op.drop_index(batch_op.f("ix_device_inventory_api_level"))

    op.drop_table("device_inventory")
    with op.batch_alter_table("device_apps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_apps_package_version_code_device_id"))

    op.drop_table("device_apps")
    with op.batch_alter_table("device_app_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_app_changes_device_id_id"))
        batch_op.drop_index(batch_op.f("ix_device_app_changes_at"))

    op.drop_table("device_app_changes")
