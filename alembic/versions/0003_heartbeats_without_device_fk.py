"""heartbeats without a foreign key to devices

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 21:40:00

On PostgreSQL a heartbeat partition that carries the foreign key cannot be detached or dropped without
locking ``devices`` (the referenced table's triggers change), so every expired day stalled every
heartbeat twice during retention. Heartbeats are written only for existing devices (the statements
check), and devices are revoked, never deleted, so the key protected nothing that a stall was worth.
"""

from collections.abc import Sequence

from alembic import op


revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = "fk_device_heartbeats_device_id_devices"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # on the partitioned parent: removes the key from every partition too (catalog only, no scan)
        op.drop_constraint(op.f(FK), "device_heartbeats", type_="foreignkey")
    else:
        with op.batch_alter_table("device_heartbeats", schema=None) as batch_op:
            batch_op.drop_constraint(op.f(FK), type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # validates every stored heartbeat against devices: a full scan on a big table
        op.create_foreign_key(op.f(FK), "device_heartbeats", "devices", ["device_id"], ["id"], ondelete="CASCADE")
    else:
        with op.batch_alter_table("device_heartbeats", schema=None) as batch_op:
            batch_op.create_foreign_key(op.f(FK), "devices", ["device_id"], ["id"], ondelete="CASCADE")
