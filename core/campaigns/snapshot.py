"""A campaign's snapshot: one ``INSERT ... SELECT`` of every target with its wave (or ``skipped``).

Waves follow a hash of (campaign, device), not id order, so the first wave is a fair sample; the rows go
in in device id order (the primary key's), which keeps the index inserts sequential. A device matched
beyond the count taken for a percentage starts one more wave (``wave_count`` counts it).

With ``success_when`` the same statement judges each device: one that already matches is written
``skipped`` (reason ``already_satisfied``, wave 0: never released), and the waves are numbered over the
others only, so a wave of 10 % is 10 % of the devices that need the command.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Integer, case, func, insert, literal, null, select
from sqlalchemy.orm import Session

from core.campaigns.outcomes import ALREADY_SATISFIED
from core.models import CampaignTarget
from core.storage.operations import rowcount


def judged(targets: Any, success_when: ColumnElement[bool] | None) -> Any:
    """The targets' SELECT with a ``satisfied`` column (1 when the device already matches, else 0)."""
    flag = case((success_when, 1), else_=0) if success_when is not None else literal(0, Integer)
    return targets.add_columns(flag.label("satisfied"))


def counts(db: Session, targets: Any, limit: int) -> tuple[int, int]:
    """``(matching, satisfied)`` counted up to ``limit`` rows (the cap's bounded scan)."""
    sub = targets.limit(limit).subquery()
    matching, already = db.execute(select(func.count(), func.coalesce(func.sum(sub.c.satisfied), 0))).one()
    return int(matching), int(already)


def insert_targets(db: Session, campaign_id: str, targets: Any, size: int | None) -> int:
    """One INSERT ... SELECT of every target (``targets`` from :func:`judged`); returns how many."""
    sub = targets.subquery()
    skipped = sub.c.satisfied == 1
    state = case((skipped, literal("skipped")), else_=literal("queued"))
    reason = case((skipped, literal(ALREADY_SATISFIED)), else_=null())
    if size is None:
        wave: Any = case((skipped, 0), else_=1)
        source = select(literal(campaign_id), sub.c.id, sub.c.generation, wave, state, reason).order_by(sub.c.id)
    else:
        ranked = select(
            sub.c.id.label("device_id"),
            sub.c.generation,
            sub.c.satisfied,
            func.row_number()
            .over(partition_by=sub.c.satisfied, order_by=(func.md5(literal(campaign_id) + sub.c.id), sub.c.id))
            .label("rn"),
        ).subquery()
        skipped = ranked.c.satisfied == 1
        state = case((skipped, literal("skipped")), else_=literal("queued"))
        reason = case((skipped, literal(ALREADY_SATISFIED)), else_=null())
        wave = case((skipped, 0), else_=(ranked.c.rn - 1) // literal(size, Integer) + 1)
        source = select(literal(campaign_id), ranked.c.device_id, ranked.c.generation, wave, state, reason).order_by(
            ranked.c.device_id
        )
    columns = ["campaign_id", "device_id", "generation", "wave", "state", "reason"]
    return rowcount(db.execute(insert(CampaignTarget).from_select(columns, source)))
