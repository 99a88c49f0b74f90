"""push queue index: pending pushes in id order, whatever the history

Revision ID: 0007
Revises: 0004
Create Date: 2026-11-29 20:15:00.000000

The delivery worker claims the oldest pending pushes (``ORDER BY id LIMIT 500``). With millions of
finished commands kept for 90 days, PostgreSQL walked the primary key past all of them on every claim
(0.5-1 s per claim of 500 among 2 M old rows); this partial index holds only the pending ones.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from core.migrations import create_index_concurrently, drop_index_concurrently


revision: str = "0007"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "status = 'pending' AND fcm_status = 'pending'"


def upgrade() -> None:
    create_index_concurrently(
        "ix_fcm_dispatches_push_queue",
        "fcm_dispatches",
        ["id"],
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )


def downgrade() -> None:
    drop_index_concurrently("ix_fcm_dispatches_push_queue", "fcm_dispatches")
