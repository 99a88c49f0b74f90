"""push queue age index: the queue's depth and oldest row read from one small index

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 00:00:00.000000

``queue_stats`` (``nexmdm top``, the queue gauges) counts the pending pushes and takes the oldest
``created_at`` among them. Without an index holding both, PostgreSQL read every pending command's heap
row (8 ms with a wave of 28,500 campaign pushes queued); this partial index holds only the queue's rows,
so the count is an index-only scan and the minimum its first entry (1.7 ms). It is maintained only when a
command enters or leaves the queue, never by a heartbeat.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from core.storage.migrations import create_index_concurrently, drop_index_concurrently


revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_fcm_dispatches_push_queue_created_at"
PENDING = "status = 'pending' AND fcm_status = 'pending'"


def upgrade() -> None:
    create_index_concurrently(
        NAME, "fcm_dispatches", ["created_at"], postgresql_where=sa.text(PENDING), sqlite_where=sa.text(PENDING)
    )


def downgrade() -> None:
    drop_index_concurrently(NAME, "fcm_dispatches")
