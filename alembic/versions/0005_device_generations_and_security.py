"""device generations, cancelled commands, enrollment secrets, withdrawn APK builds (issue #11)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 20:00:00

* ``devices.generation`` and ``fcm_dispatches.generation`` (integers, 1 for every existing row): a revoked id
  that enrolls again is a new generation and never sees the old one's commands, acks or pushes.
* ``devices.enrollment_secret_hash``: the hash of the one-time secret a lost-answer retry must present.
* ``fcm_dispatches.status`` may be ``cancelled``.
* ``apk_builds.removed_at`` (``nexmdm apk remove``) and an index for "one download event per credential and
  build per session".

On PostgreSQL the columns have constant defaults (no table rewrite), the new check constraint is added
``NOT VALID`` and validated afterwards (no lock that blocks writers while it scans), and the index is built
concurrently.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.storage.types
from core.storage.migrations import create_index_concurrently, drop_index_concurrently

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUS_CHECK = "ck_fcm_dispatches_status_known"
OLD_STATUSES = "status IN ('pending', 'acked', 'failed', 'expired')"
NEW_STATUSES = "status IN ('pending', 'acked', 'failed', 'expired', 'cancelled')"
DOWNLOAD_INDEX = "ix_apk_download_events_token_id_build_id_created_at"


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("generation", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("enrollment_secret_hash", sa.String(length=64), nullable=True))
    with op.batch_alter_table("apk_builds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("removed_at", core.storage.types.UTCDateTime(timezone=True), nullable=True))
    if postgresql:
        op.add_column("fcm_dispatches", sa.Column("generation", sa.Integer(), server_default="1", nullable=False))
        op.drop_constraint(op.f(STATUS_CHECK), "fcm_dispatches", type_="check")
        op.execute(f"ALTER TABLE fcm_dispatches ADD CONSTRAINT {STATUS_CHECK} CHECK ({NEW_STATUSES}) NOT VALID")
        op.execute(f"ALTER TABLE fcm_dispatches VALIDATE CONSTRAINT {STATUS_CHECK}")
    else:
        with op.batch_alter_table("fcm_dispatches", schema=None) as batch_op:
            batch_op.add_column(sa.Column("generation", sa.Integer(), server_default="1", nullable=False))
            batch_op.drop_constraint(op.f(STATUS_CHECK), type_="check")
            batch_op.create_check_constraint(op.f(STATUS_CHECK), sa.text(NEW_STATUSES))
    create_index_concurrently(op.f(DOWNLOAD_INDEX), "apk_download_events", ["token_id", "build_id", "created_at"])


def downgrade() -> None:
    drop_index_concurrently(op.f(DOWNLOAD_INDEX), "apk_download_events")
    # cancelled commands were finished: the old schema knows them as expired
    op.execute("UPDATE fcm_dispatches SET status = 'expired' WHERE status = 'cancelled'")
    with op.batch_alter_table("fcm_dispatches", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(STATUS_CHECK), type_="check")
        batch_op.create_check_constraint(op.f(STATUS_CHECK), sa.text(OLD_STATUSES))
        batch_op.drop_column("generation")
    with op.batch_alter_table("apk_builds", schema=None) as batch_op:
        batch_op.drop_column("removed_at")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("enrollment_secret_hash")
        batch_op.drop_column("generation")
