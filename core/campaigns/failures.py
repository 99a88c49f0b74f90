"""Why a campaign's targets failed: groups by (reason, model, OS version), and the devices of one group.

A failed target is one whose command failed (the device acked ``failed``) or expired, or one that failed
on its outcome (``outcome_timeout``). Its reason is, in this order: the outcome's reason; ``expired``;
the ack's typed ``error_code`` (``core.commands.action_schemas.ERROR_CODES``, such as
``INSUFFICIENT_STORAGE``); for an agent that sends none, an ack's ``detail`` that is itself a code (upper
case, no space, at most 32 characters); else ``failed``. Model and OS version are the device's
inventory's (``device_inventory``), else what it said at enrollment, else ``unknown``.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from core.base.errors import InvalidArgument
from core.campaigns.records import load
from core.models import CampaignTarget, Device, DeviceInventory, FcmDispatch
from core.storage.dialect import is_postgresql

UNKNOWN = "unknown"
SAMPLES = 3


def _is_code(detail: Any) -> ColumnElement[bool]:
    """``detail`` reads as an error code: upper case, no space, 1-32 characters (the same test on both
    databases): how an agent without typed error codes names its failure."""
    return and_(func.length(detail).between(1, 32), func.upper(detail) == detail, ~detail.contains(" "))


def _command_reason() -> ColumnElement[str]:
    """Why a failed or expired command failed: ``expired``, its ack's error code, a code in its detail, or
    ``failed``."""
    d = FcmDispatch
    return case(
        (d.status == "expired", literal("expired")),
        (d.error_code.is_not(None), d.error_code),
        (_is_code(d.ack_detail), d.ack_detail),
        else_=literal("failed"),
    )


def _reason() -> ColumnElement[str]:
    t = CampaignTarget
    return case((t.state == "failed", t.reason), else_=_command_reason()).label("reason")


def _failed_targets(campaign_id: str) -> Any:
    """Every failed target of the campaign with its reason, model, OS version and ack detail."""
    t, d = CampaignTarget, FcmDispatch
    inv = DeviceInventory
    model = func.coalesce(inv.model, Device.model, literal(UNKNOWN, String)).label("model")
    os_version = func.coalesce(inv.os_version, Device.os_version, literal(UNKNOWN, String)).label("os_version")
    return (
        select(
            t.device_id,
            _reason(),
            model,
            os_version,
            d.error_code,
            d.ack_detail.label("detail"),
            d.finished_at,
            t.outcome_at,
        )
        .select_from(t)
        .outerjoin(d, d.request_id == literal(campaign_id + ":") + t.device_id)
        .outerjoin(Device, Device.id == t.device_id)
        .outerjoin(inv, inv.device_id == t.device_id)
        .where(
            t.campaign_id == campaign_id,
            or_(t.state == "failed", and_(t.state == "queued", d.status.in_(("failed", "expired")))),
        )
        .subquery()
    )


def _group_rows(campaign_id: str) -> Any:
    """Each failed target's device id and group (reason, model, OS version), as ``_failed_targets`` reads
    them, without the drill-down's columns: a target failed on its outcome has its reason, so only the
    campaign's failed or expired commands are joined (by device: ``campaign_id`` is indexed and a campaign
    has one command per device, ``{campaign_id}:{device_id}``), each reduced to its reason first."""
    t, inv = CampaignTarget, DeviceInventory
    commands = (
        select(FcmDispatch.device_id, _command_reason().label("reason"))
        .where(FcmDispatch.campaign_id == campaign_id, FcmDispatch.status.in_(("failed", "expired")))
        .subquery()
    )
    return (
        select(
            t.device_id,
            case((t.state == "failed", t.reason), else_=commands.c.reason).label("reason"),
            func.coalesce(inv.model, Device.model, literal(UNKNOWN, String)).label("model"),
            func.coalesce(inv.os_version, Device.os_version, literal(UNKNOWN, String)).label("os_version"),
        )
        .select_from(t)
        .outerjoin(commands, commands.c.device_id == t.device_id)
        .outerjoin(Device, Device.id == t.device_id)
        .outerjoin(inv, inv.device_id == t.device_id)
        .where(
            t.campaign_id == campaign_id,
            or_(t.state == "failed", and_(t.state == "queued", commands.c.device_id.is_not(None))),
        )
    )


def failure_groups(db: Session, campaign_id: str) -> dict[str, Any]:
    """``{"campaign_id", "failed", "groups": [{reason, model, os_version, count, sample_device_ids}]}``:
    the largest group first, ties by (reason, model, OS version); each group's samples are its lowest
    three device ids, in order.

    PostgreSQL: one aggregate, each group's ids gathered by ``array_agg(device_id ORDER BY device_id)`` and
    cut to the first three; the rows reach it sorted by device id (they come nearly in that order, so that
    sort is cheap, and each group's own sort then finds its input sorted). No window function over every row
    (at 100,000 that took most of a second) and no CTE (it kept the join out of parallel workers):
    docs/performance.md §12. SQLite, without ``array_agg``: ``_by_passes``."""
    load(db, campaign_id)
    if is_postgresql(db):
        # the statement's estimated cost at 100,000 targets crosses jit_above_cost and compiling it took longer
        # than running it; its sort of 100,000 ids takes ~11 MB (the default work_mem is 4 MB): both local to
        # the transaction (docs/performance.md §12)
        db.execute(text("SELECT set_config('jit', 'off', true), set_config('work_mem', '32MB', true)"))
        groups = _by_sorted_ids(db, campaign_id)
    else:
        groups = _by_passes(db, campaign_id)
    return {"campaign_id": campaign_id, "failed": sum(g["count"] for g in groups), "groups": groups}


def _group(reason: str, model: str, os_version: str, count: int, samples: list[str]) -> dict[str, Any]:
    return {"reason": reason, "model": model, "os_version": os_version, "count": count, "sample_device_ids": samples}


def _by_sorted_ids(db: Session, campaign_id: str) -> list[dict[str, Any]]:
    """PostgreSQL: each group's count and its lowest ``SAMPLES`` device ids, in one pass."""
    failed = _group_rows(campaign_id).order_by(CampaignTarget.device_id).subquery()
    keys = (failed.c.reason, failed.c.model, failed.c.os_version)
    ids = func.array_agg(aggregate_order_by(failed.c.device_id, failed.c.device_id))[1:SAMPLES]
    query = select(*keys, func.count(), ids).group_by(*keys).order_by(func.count().desc(), *keys)
    return [
        _group(reason, model, os_version, n, list(samples))
        for reason, model, os_version, n, samples in db.execute(query)
    ]


def _by_passes(db: Session, campaign_id: str) -> list[dict[str, Any]]:
    """SQLite (no ``array_agg``): the failed targets read once, into a CTE; then ``SAMPLES`` hash-aggregate
    passes over it: the first counts each group and takes its lowest device id, each later one the lowest
    of each group among the ids no earlier pass took (a device is one target of the campaign, so leaving
    out every group's taken ids leaves out each group's own). Only the groups are sorted."""
    failed = _group_rows(campaign_id).cte("failed")
    keys = (failed.c.reason, failed.c.model, failed.c.os_version)
    lowest = func.min(failed.c.device_id).label("device_id")
    taken: list[Any] = []
    for n in range(SAMPLES):
        count = func.count() if n == 0 else cast(null(), BigInteger)
        step = select(literal(n).label("pass"), *keys, count.label("n"), lowest).group_by(*keys)
        if taken:
            step = step.where(failed.c.device_id.not_in(union_all(*(select(p.c.device_id) for p in taken))))
        taken.append(step.cte(f"pass_{n}"))
    both = union_all(*(select(p) for p in taken)).subquery()
    rows = db.execute(
        select(both).order_by(both.c["pass"], both.c.n.desc(), both.c.reason, both.c.model, both.c.os_version)
    )
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for _, reason, model, os_version, n, device_id in rows:
        key = (reason, model, os_version)
        if n is not None:
            found[key] = _group(reason, model, os_version, n, [])
        found[key]["sample_device_ids"].append(device_id)
    return list(found.values())


def failed_devices(
    db: Session,
    campaign_id: str,
    *,
    reason: str | None = None,
    model: str | None = None,
    os_version: str | None = None,
    limit: int = 100,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """The failed targets (of one group when filtered), by device id, with the ack's error code and detail;
    keyset paging."""
    load(db, campaign_id)
    if reason is not None and not re.fullmatch(r"[A-Za-z0-9_]{1,32}", reason):
        raise InvalidArgument(
            "reason is a failure reason such as outcome_timeout or INSUFFICIENT_STORAGE (A-Z, 0-9, _)", field="reason"
        )
    failed = _failed_targets(campaign_id)
    query = select(failed).order_by(failed.c.device_id).limit(limit)
    for column, value in ((failed.c.reason, reason), (failed.c.model, model), (failed.c.os_version, os_version)):
        if value is not None:
            query = query.where(column == value)
    if after is not None:
        query = query.where(failed.c.device_id > after)
    return [
        {
            "device_id": row.device_id,
            "reason": row.reason,
            "model": row.model,
            "os_version": row.os_version,
            "error_code": row.error_code,
            "detail": row.detail,
            "failed_at": row.outcome_at or row.finished_at,
        }
        for row in db.execute(query)
    ]
