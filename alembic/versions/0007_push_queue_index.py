"""push queue index: pending pushes in id order, whatever the history

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 20:15:00.000000

The delivery worker claims the oldest pending pushes (``ORDER BY id LIMIT 500``). With millions of
finished commands kept for 90 days, PostgreSQL walked the primary key past all of them on every claim
(0.5-1 s per claim of 500 among 2 M old rows); these partial indexes hold only the pending ones: one for commands of no campaign, claimed first, one for
campaign commands (so that one `lock` never waits behind 100k campaign pushes).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from core.storage.migrations import create_index_concurrently, drop_index_concurrently


revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "status = 'pending' AND fcm_status = 'pending'"
INDEXES = {
    "ix_fcm_dispatches_push_queue": f"{PENDING} AND campaign_id IS NULL",
    "ix_fcm_dispatches_campaign_push_queue": f"{PENDING} AND campaign_id IS NOT NULL",
}


def upgrade() -> None:
    for name, where in INDEXES.items():
        create_index_concurrently(
            name, "fcm_dispatches", ["id"], postgresql_where=sa.text(where), sqlite_where=sa.text(where)
        )


def downgrade() -> None:
    for name in reversed(INDEXES):
        drop_index_concurrently(name, "fcm_dispatches")
