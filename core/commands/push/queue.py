"""The push queue in SQL: claim due commands with a lease, record outcomes in batches, sweep, gauges.

Each function takes a ``Session`` and never commits: the worker runs each one in its own short
transaction, so no lock is ever held across an HTTP call to FCM.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, Integer, Row, and_, case, func, literal, or_, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.commands.lifecycle import finish_pending
from core.models import FINISHED_STATUSES, Device, FcmDispatch
from core.storage.dialect import is_postgresql
from core.storage.operations import rowcount
from core.storage.types import utcnow

logger = logging.getLogger("nexmdm.delivery")


@dataclass(frozen=True)
class Claim:
    """One leased command, with what its push needs."""

    id: int
    request_id: str
    device_id: str
    action: str
    attempts: int
    lease_until: datetime
    created_at: datetime
    fcm_token: str | None
    #: when the command expires (its push's ``android.ttl`` is the time left until then)
    expires_at: datetime


@dataclass(frozen=True)
class Decision:
    """What to store for one claim: the column values and the outcome name reported."""

    claim: Claim
    values: dict[str, Any]
    outcome: str


def claim_due(
    db: Session, *, now: datetime, lease_until: datetime, limit: int
) -> Sequence[Row[int, str, str, str, int, datetime, datetime | None]]:
    """Lease up to ``limit`` commands whose push is due: the push queue's one claim query.

    Due means: the command is pending, its push is pending, no backoff is ahead of it, nobody holds an
    unexpired lease on it and it belongs to its device's current enrollment generation (a re-enrolled id
    gets no push of the old one). Commands of no campaign first, then campaign commands, each oldest first
    from its own partial index, so one ``lock`` never waits behind 100k campaign pushes. ``FOR UPDATE SKIP
    LOCKED`` on PostgreSQL, so concurrent claimers take disjoint rows without waiting; SQLite's ``BEGIN
    IMMEDIATE`` serializes claimers instead. Filters and orderings of the queue belong here and nowhere else.
    """
    rows: list[Row[int, str, str, str, int, datetime, datetime | None]] = []
    for of_campaign in (FcmDispatch.campaign_id.is_(None), FcmDispatch.campaign_id.is_not(None)):
        if len(rows) >= limit:
            break
        due = (
            select(FcmDispatch.id)
            .where(
                FcmDispatch.status == "pending",
                FcmDispatch.fcm_status == "pending",
                of_campaign,
                or_(FcmDispatch.next_attempt_at.is_(None), FcmDispatch.next_attempt_at <= now),
                or_(FcmDispatch.lease_until.is_(None), FcmDispatch.lease_until < now),
                select(Device.id)
                .where(Device.id == FcmDispatch.device_id, Device.generation == FcmDispatch.generation)
                .exists(),
            )
            .order_by(FcmDispatch.id)
            .limit(limit - len(rows))
            .with_for_update(skip_locked=True)
        )
        rows += db.execute(
            update(FcmDispatch)
            .where(FcmDispatch.id.in_(due.scalar_subquery()))
            .values(lease_until=lease_until, attempts=FcmDispatch.attempts + 1)
            .returning(
                FcmDispatch.id,
                FcmDispatch.request_id,
                FcmDispatch.device_id,
                FcmDispatch.action,
                FcmDispatch.attempts,
                FcmDispatch.created_at,
                FcmDispatch.expires_at,
            )
            .execution_options(synchronize_session=False)
        ).all()
    return rows


def claim(db: Session, settings: Settings, *, now: datetime, limit: int) -> list[Claim]:
    """Lease a batch and look up the live registration token of each command's device."""
    lease = now + timedelta(seconds=settings.delivery_lease_seconds)
    rows = claim_due(db, now=now, lease_until=lease, limit=limit)
    if not rows:
        return []
    tokens = dict(
        db.execute(
            select(Device.id, Device.fcm_token).where(
                Device.id.in_({r.device_id for r in rows}),
                Device.fcm_token_dead_at.is_(None),
                Device.revoked_at.is_(None),
            )
        ).all()
    )
    ttl = timedelta(seconds=settings.command_ttl_seconds)
    return [
        Claim(
            r.id,
            r.request_id,
            r.device_id,
            r.action,
            r.attempts,
            lease,
            r.created_at,
            tokens.get(r.device_id),
            r.expires_at or r.created_at + ttl,
        )
        for r in sorted(rows, key=lambda r: r.id)
    ]


def _set_clause(db: Session, decisions: list[Decision]) -> tuple[dict[str, Any], Any]:
    """SET expressions for a batch: a plain value where every row gets the same one, else per-row values.

    Per-row values come from arrays unnested beside the ids on PostgreSQL (one join, however many rows)
    and from a ``CASE`` on the row id on SQLite. Every decision sets the same columns.
    """
    table = FcmDispatch.__table__
    columns = sorted(decisions[0].values)
    uniform = {
        c: decisions[0].values[c] for c in columns if all(d.values[c] == decisions[0].values[c] for d in decisions)
    }
    varying = [c for c in columns if c not in uniform]
    if not varying:
        return uniform, None
    if is_postgresql(db):
        arrays = [func.unnest(literal([d.claim.id for d in decisions], ARRAY(Integer))).label("id")]
        arrays += [
            func.unnest(literal([d.values[c] for d in decisions], ARRAY(table.c[c].type))).label(c) for c in varying
        ]
        rows = select(*arrays).subquery("outcomes")
        return uniform | {c: rows.c[c] for c in varying}, rows
    cases = {
        c: case(*[(FcmDispatch.id == d.claim.id, literal(d.values[c], table.c[c].type)) for d in decisions])
        for c in varying
    }
    return uniform | cases, None


def record(db: Session, decisions: list[Decision], now: datetime) -> set[int]:
    """Store many outcomes in one statement, only on rows whose lease is still the claimer's.

    Returns the ids that were stored. All ``decisions`` come from one claim (one lease value). Devices
    whose registration token FCM called ``UNREGISTERED`` are marked in a second statement, only for rows
    still owned.
    """
    if not decisions:
        return set()
    leases = {d.claim.lease_until for d in decisions}
    if len(leases) != 1:
        raise ValueError("one batch of outcomes must come from one claim")
    values, rows = _set_clause(db, decisions)
    # a command that finished meanwhile is never claimed again: a push left pending becomes skipped
    status = values["fcm_status"]
    if isinstance(status, str):
        if status == "pending":
            values["fcm_status"] = case((FcmDispatch.status == "pending", "pending"), else_="skipped")
    else:
        values["fcm_status"] = case(
            (and_(FcmDispatch.status != "pending", status == "pending"), "skipped"), else_=status
        )
    statement = update(FcmDispatch).where(FcmDispatch.lease_until == leases.pop())
    if rows is not None:
        statement = statement.where(FcmDispatch.id == rows.c.id)
    else:
        statement = statement.where(FcmDispatch.id.in_([d.claim.id for d in decisions]))
    owned = set(
        db.execute(
            statement.values(values | {"lease_until": None})
            .returning(FcmDispatch.id)
            .execution_options(synchronize_session=False)
        ).scalars()
    )
    dead = {
        (d.claim.device_id, d.claim.fcm_token)
        for d in decisions
        if d.outcome == "unregistered" and d.claim.id in owned and d.claim.fcm_token
    }
    if dead:
        db.execute(
            update(Device)
            .where(tuple_(Device.id, Device.fcm_token).in_(sorted(dead)))
            .values(fcm_token_dead_at=now)
            .execution_options(synchronize_session=False)
        )
    return owned


def sweep_expired(session_factory: sessionmaker[Session], settings: Settings, now: datetime | None = None) -> int:
    """Mark commands with no acknowledgement within ``command_ttl_seconds`` as ``expired``.

    Run by the maintenance leader (``core.ops.maintenance``: one process among every server and worker), with
    or without FCM; safe anywhere at once (one conditional UPDATE).
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.command_ttl_seconds)
    with session_factory.begin() as db:
        expired = rowcount(
            db.execute(
                finish_pending(
                    FcmDispatch.expires_at.is_(None), FcmDispatch.created_at < cutoff, status="expired", now=now
                )
            )
        )
        # commands with their own lifetime (campaign releases), by the (status, expires_at) index
        expired += rowcount(db.execute(finish_pending(FcmDispatch.expires_at < now, status="expired", now=now)))
        # the pushes that will never be sent (their command finished; no worker holds them): skipped
        db.execute(
            update(FcmDispatch)
            .where(
                FcmDispatch.fcm_status == "pending",
                FcmDispatch.status.in_(FINISHED_STATUSES),
                or_(FcmDispatch.lease_until.is_(None), FcmDispatch.lease_until < now),
            )
            .values(fcm_status="skipped")
            .execution_options(synchronize_session=False)
        )
    if expired:
        logger.info("expired %d commands older than %ss", expired, settings.command_ttl_seconds)
    return expired or 0


def queue_stats(db: Session, now: datetime | None = None) -> dict[str, Any]:
    """Depth of the push queue and the age of its oldest row (for metrics)."""
    now = now or utcnow()
    depth, oldest = db.execute(
        select(func.count(), func.min(FcmDispatch.created_at)).where(
            FcmDispatch.status == "pending", FcmDispatch.fcm_status == "pending"
        )
    ).one()
    return {"depth": depth, "oldest_age_seconds": (now - oldest).total_seconds() if oldest else 0.0}
