"""typed actions: an ack's result and error code, device locations, lost mode

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 03:00:00

Two nullable columns on ``fcm_dispatches`` (no rewrite of the table on PostgreSQL) and two new tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models.base
import core.storage.types

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = core.storage.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("fcm_dispatches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result", core.models.base.JSONType, nullable=True))
        batch_op.add_column(sa.Column("error_code", sa.String(length=32), nullable=True))
    op.create_table(
        "device_locations",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("accuracy_m", sa.Float(), nullable=False),
        sa.Column("fixed_at", UTC, nullable=False),
        sa.Column("received_at", UTC, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=True),
        sa.CheckConstraint("source IN ('locate', 'lost_mode')", name=op.f("ck_device_locations_source_known")),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_locations_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_locations")),
    )
    op.create_index(op.f("ix_device_locations_device_id_fixed_at"), "device_locations", ["device_id", "fixed_at"])
    op.create_index(op.f("ix_device_locations_received_at"), "device_locations", ["received_at"])
    op.create_table(
        "device_lost_mode",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("since", UTC, nullable=False),
        sa.Column("message", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=40), nullable=True),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_lost_mode_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_lost_mode")),
    )


def downgrade() -> None:
    op.drop_table("device_lost_mode")
    op.drop_index(op.f("ix_device_locations_received_at"), table_name="device_locations")
    op.drop_index(op.f("ix_device_locations_device_id_fixed_at"), table_name="device_locations")
    op.drop_table("device_locations")
    with op.batch_alter_table("fcm_dispatches", schema=None) as batch_op:
        batch_op.drop_column("error_code")
        batch_op.drop_column("result")
