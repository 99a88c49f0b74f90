"""roles on admin keys, audit trail, webhook outbox, device presence (``cancelled`` commands came with 0005)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 20:00:00

Existing admin keys become ``admin`` (they could do everything before). Only new tables and one small
column: nothing here rewrites a big table on PostgreSQL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models.base
import core.storage.types

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = core.storage.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("admin_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), server_default="admin", nullable=False))
        batch_op.create_check_constraint(op.f("ck_admin_keys_role_known"), "role IN ('viewer', 'operator', 'admin')")

    op.create_table(
        "audit_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("details", core.models.base.JSONType, nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("aggregate_key", sa.String(length=400), nullable=True),
        sa.CheckConstraint("outcome IN ('success', 'denied')", name=op.f("ck_audit_events_outcome_known")),
        sa.CheckConstraint("count >= 1", name=op.f("ck_audit_events_count_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("aggregate_key", name=op.f("uq_audit_events_aggregate_key")),
    )
    op.create_index(op.f("ix_audit_events_at"), "audit_events", ["at"])
    op.create_index(op.f("ix_audit_events_actor_id"), "audit_events", ["actor", "id"])
    op.create_index(op.f("ix_audit_events_action_id"), "audit_events", ["action", "id"])

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("events", core.models.base.JSONType, nullable=False),
        sa.Column("secret", core.storage.types.SecretText(length=128), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_table(
        "webhook_outbox",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("endpoint_id", sa.String(length=32), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("order_key", sa.String(length=128), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=False),
        sa.Column("lease_until", UTC, nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("finished_at", UTC, nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')", name=op.f("ck_webhook_outbox_status_known")),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_outbox_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_outbox")),
        sa.UniqueConstraint("endpoint_id", "event_id", name=op.f("uq_webhook_outbox_endpoint_id_event_id")),
    )
    op.create_index(op.f("ix_webhook_outbox_status_next_attempt_at"), "webhook_outbox", ["status", "next_attempt_at"])
    op.create_index(
        op.f("ix_webhook_outbox_endpoint_id_order_key_status_id"),
        "webhook_outbox",
        ["endpoint_id", "order_key", "status", "id"],
    )
    op.create_index(op.f("ix_webhook_outbox_created_at"), "webhook_outbox", ["created_at"])

    op.create_table(
        "device_presence",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("changed_at", UTC, nullable=False),
        sa.CheckConstraint("state IN ('online', 'offline')", name=op.f("ck_device_presence_state_known")),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_presence")),
    )
    op.create_index(op.f("ix_device_presence_state_device_id"), "device_presence", ["state", "device_id"])
    op.create_table(
        "presence_sweeps",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("swept_at", UTC, nullable=False),
        sa.Column("grace_from", UTC, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_presence_sweeps")),
    )


def downgrade() -> None:
    op.drop_table("presence_sweeps")
    op.drop_index(op.f("ix_device_presence_state_device_id"), table_name="device_presence")
    op.drop_table("device_presence")
    op.drop_index(op.f("ix_webhook_outbox_created_at"), table_name="webhook_outbox")
    op.drop_index(op.f("ix_webhook_outbox_endpoint_id_order_key_status_id"), table_name="webhook_outbox")
    op.drop_index(op.f("ix_webhook_outbox_status_next_attempt_at"), table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
    op.drop_table("webhook_endpoints")
    op.drop_index(op.f("ix_audit_events_action_id"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_actor_id"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_at"), table_name="audit_events")
    op.drop_table("audit_events")
    with op.batch_alter_table("admin_keys", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_admin_keys_role_known"), type_="check")
        batch_op.drop_column("role")
