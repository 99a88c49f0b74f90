"""compliance state: a device's compliance stored on ``devices``, kept where it changes

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 06:30:00.000000

``devices`` gains ``compliance_state`` (compliant, noncompliant, pending, unknown) and
``compliance_reasons`` (``,R1,R2,`` while noncompliant), both with a constant default (no rewrite on
PostgreSQL 11+), and a partial index of the pending devices by ``effective_since`` (the sweep's grace
expiry; a heartbeat's UPDATE of a device that is not pending adds no entry to it). The backfill gives every device
the state that was derived at read time until now (``effective_hash``, ``effective_since`` and its last
report in ``device_compliance``, against ``NEXMDM_PROFILE_GRACE_SECONDS`` as the environment says now),
in one ``UPDATE`` of the devices that have an effective hash.
"""

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

import core.storage.types

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DATETIME = core.storage.types.UTCDateTime(timezone=True)
devices = sa.table(
    "devices",
    sa.column("id", sa.String()),
    sa.column("effective_hash", sa.String()),
    sa.column("effective_since", DATETIME),
    sa.column("compliance_state", sa.String()),
    sa.column("compliance_reasons", sa.String()),
)
reports = sa.table(
    "device_compliance",
    sa.column("device_id", sa.String()),
    sa.column("reported_hash", sa.String()),
    sa.column("state", sa.String()),
    sa.column("reasons", sa.String()),
)


def _backfill() -> None:
    """The read-time derivation of 0018 (``core/devices/compliance_terms.py`` as it was), stored once."""
    grace = int(os.environ.get("NEXMDM_PROFILE_GRACE_SECONDS", "900") or 900)
    grace_start = datetime.now(UTC) - timedelta(seconds=grace)

    def reported(column: sa.ColumnClause[str]) -> sa.ScalarSelect[str]:
        return sa.select(column).where(reports.c.device_id == devices.c.id).scalar_subquery()

    reported_hash, reported_state = reported(reports.c.reported_hash), reported(reports.c.state)
    settled = sa.and_(reported_hash == devices.c.effective_hash, reported_state != "pending")
    state = sa.case(
        (settled, reported_state),
        (devices.c.effective_since >= sa.bindparam("grace_start", grace_start, type_=DATETIME), "pending"),
        (reported_hash.is_(None), "unknown"),
        else_="noncompliant",
    )
    reasons = sa.case((settled, reported(reports.c.reasons)), else_=",PENDING,")
    op.execute(
        devices.update()
        .where(devices.c.effective_hash.is_not(None))
        .values(compliance_state=state, compliance_reasons=reasons)
    )


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("compliance_state", sa.String(length=16), server_default="compliant", nullable=False)
        )
        batch_op.add_column(sa.Column("compliance_reasons", sa.String(length=400), server_default=",", nullable=False))
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_devices_compliance_pending",
            ["effective_since"],
            unique=False,
            postgresql_where=sa.text("compliance_state = 'pending'"),
            sqlite_where=sa.text("compliance_state = 'pending'"),
        )
    _backfill()


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_compliance_pending")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("compliance_reasons")
        batch_op.drop_column("compliance_state")
