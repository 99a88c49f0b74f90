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

from sqlalchemy import ColumnElement, String, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from core.base.errors import InvalidArgument
from core.campaigns.records import load
from core.models import CampaignTarget, Device, DeviceInventory, FcmDispatch

UNKNOWN = "unknown"
SAMPLES = 3


def _is_code(detail: Any) -> ColumnElement[bool]:
    """``detail`` reads as an error code: upper case, no space, 1-32 characters (the same test on both
    databases): how an agent without typed error codes names its failure."""
    return and_(func.length(detail).between(1, 32), func.upper(detail) == detail, ~detail.contains(" "))


def _reason() -> ColumnElement[str]:
    t, d = CampaignTarget, FcmDispatch
    return case(
        (t.state == "failed", t.reason),
        (d.status == "expired", literal("expired")),
        (d.error_code.is_not(None), d.error_code),
        (_is_code(d.ack_detail), d.ack_detail),
        else_=literal("failed"),
    ).label("reason")


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


def failure_groups(db: Session, campaign_id: str) -> dict[str, Any]:
    """``{"campaign_id", "failed", "groups": [{reason, model, os_version, count, sample_device_ids}]}``,
    the largest group first: one set-based read of the failed targets (each group's count and its first
    three devices by id, from the same window)."""
    load(db, campaign_id)
    failed = _failed_targets(campaign_id)
    keys = (failed.c.reason, failed.c.model, failed.c.os_version)
    ranked = select(
        *keys,
        failed.c.device_id,
        func.row_number().over(partition_by=keys, order_by=failed.c.device_id).label("rn"),
        func.count().over(partition_by=keys).label("n"),
    ).subquery()
    picked = ranked.c.reason, ranked.c.model, ranked.c.os_version
    rows = db.execute(
        select(*picked, ranked.c.n, ranked.c.device_id)
        .where(ranked.c.rn <= SAMPLES)
        .order_by(ranked.c.n.desc(), *picked, ranked.c.device_id)
    )
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for reason, model, os_version, n, device_id in rows:
        group = found.setdefault(
            (reason, model, os_version),
            {"reason": reason, "model": model, "os_version": os_version, "count": n, "sample_device_ids": []},
        )
        group["sample_device_ids"].append(device_id)
    groups = list(found.values())
    return {"campaign_id": campaign_id, "failed": sum(g["count"] for g in groups), "groups": groups}


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
