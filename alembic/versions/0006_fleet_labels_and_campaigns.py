"""fleet operations: device labels, campaigns and their targets

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 20:00:00

Adds ``device_labels``, ``campaigns``, ``campaign_targets``; ``devices.agent_version_key`` (a sortable
form of the agent version, for ``@agent_version<2.1.0``); ``fcm_dispatches.campaign_id`` and
``expires_at``; ``enrollment_tokens.labels``. Touches nothing another migration adds.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.storage.types
from core.storage.migrations import create_index_concurrently, drop_index_concurrently
from core.models.base import JSONType

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_labels",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=127), nullable=False),
        sa.Column("value", sa.String(length=63), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_labels_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", "key", name=op.f("pk_device_labels")),
    )
    op.create_index(
        op.f("ix_device_labels_key_value_device_id"), "device_labels", ["key", "value", "device_id"], unique=False
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=30), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("payload", JSONType, nullable=True),
        sa.Column("payload_hash", sa.String(length=128), nullable=False),
        sa.Column("selector", sa.Text(), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("targeted", sa.Integer(), nullable=False),
        sa.Column("wave_size", sa.Integer(), nullable=False),
        sa.Column("wave_count", sa.Integer(), nullable=False),
        sa.Column("waves_released", sa.Integer(), nullable=False),
        sa.Column("release_cursor", sa.String(length=128), nullable=True),
        sa.Column("wave_percent", sa.Float(), nullable=True),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column("min_success_pct", sa.Float(), nullable=True),
        sa.Column("max_failure_pct", sa.Float(), nullable=True),
        sa.Column("expires_in_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_wave_at", core.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", core.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("final_counts", JSONType, nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'paused', 'halted', 'completed', 'cancelled')",
            name=op.f("ck_campaigns_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_index(op.f("ix_campaigns_idempotency_key"), "campaigns", ["idempotency_key"], unique=True)
    op.create_index(op.f("ix_campaigns_status"), "campaigns", ["status"], unique=False)
    op.create_table(
        "campaign_targets",
        sa.Column("campaign_id", sa.String(length=30), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.CheckConstraint("state IN ('queued', 'cancelled')", name=op.f("ck_campaign_targets_state_known")),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_targets_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_campaign_targets_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("campaign_id", "device_id", name=op.f("pk_campaign_targets")),
    )
    op.create_index(
        op.f("ix_campaign_targets_campaign_id_state_wave_device_id"),
        "campaign_targets",
        ["campaign_id", "state", "wave", "device_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_campaign_targets_device_id_state"), "campaign_targets", ["device_id", "state"], unique=False
    )
    # nullable columns: catalog-only on PostgreSQL, no table rewrite
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_version_key", sa.String(length=400), nullable=True))
        batch_op.create_index(batch_op.f("ix_devices_agent_version_key"), ["agent_version_key"], unique=False)
    with op.batch_alter_table("enrollment_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("labels", JSONType, nullable=True))
    with op.batch_alter_table("fcm_dispatches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("campaign_id", sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column("expires_at", core.storage.types.UTCDateTime(timezone=True), nullable=True))
    _backfill_version_keys()
    # fcm_dispatches keeps 90 days of commands: built without blocking writers on PostgreSQL, last (see 0002)
    create_index_concurrently(
        op.f("ix_fcm_dispatches_campaign_id_status_fcm_status"),
        "fcm_dispatches",
        ["campaign_id", "status", "fcm_status"],
    )
    create_index_concurrently(op.f("ix_fcm_dispatches_status_expires_at"), "fcm_dispatches", ["status", "expires_at"])


def _backfill_version_keys() -> None:
    """Devices enrolled before this migration get their key (one UPDATE per distinct version)."""
    from core.base.versions import version_key

    bind = op.get_bind()
    versions = bind.execute(sa.text("SELECT DISTINCT agent_version FROM devices WHERE agent_version IS NOT NULL"))
    for (version,) in versions.all():
        key = version_key(version)
        if key is not None:
            bind.execute(
                sa.text("UPDATE devices SET agent_version_key = :k WHERE agent_version = :v"), {"k": key, "v": version}
            )


def downgrade() -> None:
    drop_index_concurrently(op.f("ix_fcm_dispatches_status_expires_at"), "fcm_dispatches")
    drop_index_concurrently(op.f("ix_fcm_dispatches_campaign_id_status_fcm_status"), "fcm_dispatches")
    with op.batch_alter_table("fcm_dispatches", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
        batch_op.drop_column("campaign_id")
    with op.batch_alter_table("enrollment_tokens", schema=None) as batch_op:
        batch_op.drop_column("labels")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_agent_version_key"))
        batch_op.drop_column("agent_version_key")
    op.drop_index(op.f("ix_campaign_targets_device_id_state"), table_name="campaign_targets")
    op.drop_index(op.f("ix_campaign_targets_campaign_id_state_wave_device_id"), table_name="campaign_targets")
    op.drop_table("campaign_targets")
    op.drop_index(op.f("ix_campaigns_status"), table_name="campaigns")
    op.drop_index(op.f("ix_campaigns_idempotency_key"), table_name="campaigns")
    op.drop_table("campaigns")
    op.drop_index(op.f("ix_device_labels_key_value_device_id"), table_name="device_labels")
    op.drop_table("device_labels")
