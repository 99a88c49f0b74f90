"""profiles: versioned desired-state documents, who they match, effective documents and compliance

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 03:26:06.212019

``profiles`` and ``profile_versions`` (immutable), ``device_profiles`` (who each profile matches now),
``profile_effective`` (each combination of matched versions, its merged document and hash),
``device_compliance`` (a device's last status report as the server judged it). ``devices`` gains
``effective_hash`` (read by the statement the heartbeat already runs), ``effective_since`` and
``profile_stale``: two nullable columns and one with a constant default (no rewrite on PostgreSQL 11+).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.storage.types
from sqlalchemy.dialects import postgresql

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "profile_effective",
        sa.Column("combo", sa.Text(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column(
            "document", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("created_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("combo", name=op.f("pk_profile_effective")),
    )
    with op.batch_alter_table("profile_effective", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_profile_effective_hash"), ["hash"], unique=False)

    op.create_table(
        "profiles",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("selector", sa.String(length=1024), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("created_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", core.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_profiles")),
    )
    op.create_table(
        "profile_versions",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "document", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["name"], ["profiles.name"], name=op.f("fk_profile_versions_name_profiles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_profile_versions")),
    )
    op.create_table(
        "device_compliance",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("reported_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.String(length=400), nullable=False),
        sa.Column(
            "items", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("reported_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("changed_at", core.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_compliance_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_compliance")),
    )
    with op.batch_alter_table("device_compliance", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_compliance_state"), ["state"], unique=False)

    op.create_table(
        "device_profiles",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_profiles_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["name"], ["profiles.name"], name=op.f("fk_device_profiles_name_profiles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", "name", name=op.f("pk_device_profiles")),
    )
    with op.batch_alter_table("device_profiles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_profiles_name_device_id"), ["name", "device_id"], unique=False)

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("effective_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("effective_since", core.storage.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("profile_stale", sa.Boolean(), server_default=sa.true(), nullable=False))
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_devices_profile_stale",
            ["id"],
            unique=False,
            postgresql_where=sa.text("profile_stale"),
            sqlite_where=sa.text("profile_stale"),
        )


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_profile_stale")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("profile_stale")
        batch_op.drop_column("effective_since")
        batch_op.drop_column("effective_hash")

    with op.batch_alter_table("device_profiles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_profiles_name_device_id"))

    op.drop_table("device_profiles")
    with op.batch_alter_table("device_compliance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_compliance_state"))

    op.drop_table("device_compliance")
    op.drop_table("profile_versions")
    op.drop_table("profiles")
    with op.batch_alter_table("profile_effective", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profile_effective_hash"))

    op.drop_table("profile_effective")
