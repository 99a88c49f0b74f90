"""Campaigns: creation (idempotent, with a set-based snapshot of the targets) and what admins read.

Creation writes the campaign row and its targets (``campaign_targets``, each with its wave) in the
caller's transaction, and nothing else: commands are inserted by releases (``core.campaigns.release``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Integer, func, insert, literal, select
from sqlalchemy.orm import Session

from core.base import validation
from core.base.errors import InvalidArgument, NotFound
from core.base.ids import new_campaign_id
from core.base.settings import Settings
from core.campaigns.counts import live_counts, unreleased
from core.commands.destructive import refuse_unapproved
from core.commands.dispatches import IdempotencyMismatch
from core.devices import selectors
from core.events.audit import Actor, record
from core.models import Campaign, CampaignTarget, Device, FcmDispatch
from core.storage.dialect import insert_for
from core.storage.operations import rowcount
from core.storage.types import utcnow

MAX_DEVICE_IDS = 10_000
MIN_EXPIRES_SECONDS = 60
MAX_EXPIRES_SECONDS = 30 * 86400
DRILL_STATUSES = ("queued", "pending", "acked", "failed", "expired", "cancelled")


@dataclass(frozen=True)
class Waves:
    size: int | None = None
    percent: float | None = None
    interval_seconds: int = 0
    min_success_pct: float | None = None
    max_failure_pct: float | None = None


def percentage(value: Any, field: str, *, allow_zero: bool = True) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value <= 100):
        raise InvalidArgument(f"{field} must be a percentage from 0 to 100", field=field)
    if not allow_zero and value == 0:
        raise InvalidArgument(f"{field} must be above 0 % (a wave of 0 % releases nothing)", field=field)
    return float(value)


def validate_waves(waves: dict[str, Any] | None) -> Waves:
    """``{size | percent, interval_seconds, min_success_pct, max_failure_pct}``; nonsense is refused."""
    if not waves:
        return Waves()
    unknown = set(waves) - {"size", "percent", "interval_seconds", "min_success_pct", "max_failure_pct"}
    if unknown:
        raise InvalidArgument(f"unknown wave option {sorted(unknown)[0]!r}", field="waves")
    size, percent = waves.get("size"), waves.get("percent")
    if (size is None) == (percent is None):
        raise InvalidArgument("waves need exactly one of size or percent", field="waves")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise InvalidArgument("waves.size must be a whole number of devices, at least 1", field="waves.size")
    interval = waves.get("interval_seconds", 0) or 0
    if isinstance(interval, bool) or not isinstance(interval, int) or not (0 <= interval <= MAX_EXPIRES_SECONDS):
        raise InvalidArgument("waves.interval_seconds must be 0 to 30 days in seconds", field="waves.interval_seconds")
    return Waves(
        size=size,
        percent=percentage(percent, "waves.percent", allow_zero=False),
        interval_seconds=interval,
        min_success_pct=percentage(waves.get("min_success_pct"), "waves.min_success_pct"),
        max_failure_pct=percentage(waves.get("max_failure_pct"), "waves.max_failure_pct"),
    )


def _request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def max_targets(settings: Settings) -> int:
    return settings.campaign_max_targets or (50_000 if settings.is_sqlite else 1_000_000)


def resolve_targets(
    db: Session, settings: Settings, *, selector: str | None, device_ids: list[str] | None
) -> tuple[Any, str | None]:
    """The SELECT of target device ids, and the normalized selector text (None for explicit ids)."""
    if (selector is None) == (device_ids is None):
        raise InvalidArgument("give exactly one of selector or device_ids", field="selector")
    if selector is not None:
        if not selector.strip():
            raise InvalidArgument("a campaign needs a selector; write `all` to target every device", field="selector")
        parsed = selectors.parse(selector)
        return selectors.matching_ids(parsed, settings).add_columns(Device.generation), parsed.text
    ids = device_ids or []
    if not ids:
        raise InvalidArgument("device_ids is empty", field="device_ids")
    if len(ids) > MAX_DEVICE_IDS:
        raise InvalidArgument(f"at most {MAX_DEVICE_IDS:,} device_ids; use a selector", field="device_ids")
    for device_id in ids:
        validation.device_id(device_id, field="device_ids")
    ids = sorted(set(ids))
    known = set(db.execute(select(Device.id).where(Device.id.in_(ids))).scalars())
    missing = [i for i in ids if i not in known]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise NotFound(f"no device {shown}")
    return select(Device.id, Device.generation).where(Device.id.in_(ids), Device.revoked_at.is_(None)), None


def preview(
    db: Session,
    settings: Settings,
    *,
    selector: str | None = None,
    device_ids: list[str] | None = None,
    sample: int = 10,
) -> dict[str, Any]:
    """How many devices a campaign would target now, and a few of them (``--dry-run``); writes nothing."""
    ids, _ = resolve_targets(db, settings, selector=selector, device_ids=device_ids)
    sub = ids.subquery()
    count = db.execute(select(func.count()).select_from(sub)).scalar_one()
    names = db.execute(select(sub.c.id).order_by(sub.c.id).limit(sample)).scalars().all()
    return {"matched": count, "sample": list(names)}


def create_campaign(
    db: Session,
    settings: Settings,
    *,
    idempotency_key: str,
    action: str,
    payload: dict[str, Any] | None = None,
    selector: str | None = None,
    device_ids: list[str] | None = None,
    waves: dict[str, Any] | None = None,
    expires_in_seconds: int | None = None,
    note: str | None = None,
    actor: Actor | None = None,
    awaiting_approval: bool = False,
) -> tuple[bool, dict[str, Any]]:
    """Create a campaign once per Idempotency-Key; returns ``(created, campaign)``.

    A destructive action is refused unless ``awaiting_approval``: the campaign is then created in that
    status, which no release touches, by ``core.approvals`` (its release makes it ``running``).

    A repeat with the same body returns the first campaign; the same key with another body is an
    ``IdempotencyMismatch``. Concurrent identical requests meet on the unique key: one inserts, the
    others wait for its commit and replay it.
    """
    validation.request_id(idempotency_key, field="Idempotency-Key")
    validation.action(action, settings.actions)
    if not awaiting_approval:
        refuse_unapproved(action)
    validation.payload(payload)
    validation.text(note, "note", max_length=200)
    plan = validate_waves(waves)
    expires = settings.command_ttl_seconds if expires_in_seconds is None else expires_in_seconds
    if (
        isinstance(expires, bool)
        or not isinstance(expires, int)
        or not (MIN_EXPIRES_SECONDS <= expires <= MAX_EXPIRES_SECONDS)
    ):
        raise InvalidArgument("expires_in_seconds must be 60 s to 30 days", field="expires_in_seconds")
    body = {
        "action": action,
        "payload": payload,
        "selector": selector,
        "device_ids": sorted(set(device_ids)) if device_ids is not None else None,
        "waves": waves or None,
        "expires_in_seconds": expires_in_seconds,
        "note": note,
    }
    request_hash = _request_hash(body)
    existing = _replay(db, idempotency_key, request_hash)
    if existing is not None:
        return False, existing
    targets, selector_text = resolve_targets(db, settings, selector=selector, device_ids=device_ids)
    limit = max_targets(settings)
    # counted up to the cap + 1 before anything is written: a refused campaign costs one bounded scan, not a
    # snapshot of the whole fleet rolled back (issue #21); under the cap it is the exact count a percentage needs
    matching = db.execute(select(func.count()).select_from(targets.limit(limit + 1).subquery())).scalar_one()
    if matching > limit:
        raise InvalidArgument(f"more than {limit:,} devices match; at most {limit:,} (NEXMDM_CAMPAIGN_MAX_TARGETS)")
    now = utcnow()
    campaign_id = new_campaign_id()
    row = {
        "id": campaign_id,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "action": action,
        "payload": payload,
        "payload_hash": validation.payload_hash(payload),
        "selector": selector_text,
        "note": note,
        "status": "awaiting_approval" if awaiting_approval else "running",
        "targeted": 0,
        "wave_size": 0,
        "wave_count": 0,
        "waves_released": 0,
        "wave_percent": plan.percent,
        "interval_seconds": plan.interval_seconds if waves else None,
        "min_success_pct": plan.min_success_pct,
        "max_failure_pct": plan.max_failure_pct,
        "expires_in_seconds": expires,
        "created_at": now,
        "updated_at": now,
    }
    stmt = insert_for(db, Campaign).values(**row).on_conflict_do_nothing(index_elements=["idempotency_key"])
    inserted = db.execute(stmt.returning(Campaign.id)).scalar_one_or_none()
    if inserted is None:  # another request with this key committed first
        existing = _replay(db, idempotency_key, request_hash)
        if existing is None:
            raise InvalidArgument("the Idempotency-Key is being used by another request", field="Idempotency-Key")
        return False, existing
    if plan.percent is not None:
        size: int | None = max(1, math.ceil(matching * plan.percent / 100))
    else:
        size = plan.size
    targeted = _snapshot(db, campaign_id, targets, size)
    if targeted == 0:  # the caller's transaction rolls back: nothing was written
        raise InvalidArgument("no device matches: a campaign needs at least one target", field="selector")
    if targeted > limit:  # devices enrolled between the count and the snapshot
        raise InvalidArgument(f"{targeted:,} devices match; at most {limit:,} (NEXMDM_CAMPAIGN_MAX_TARGETS)")
    size = min(size or targeted, targeted)
    campaign = load(db, campaign_id)
    campaign.targeted, campaign.wave_size, campaign.wave_count = targeted, size, math.ceil(targeted / size)
    db.flush()
    # one row for the whole fan-out: what was asked (selector or how many ids) and how many it reached
    scope = {"selector": selector} if selector is not None else {"device_ids": len(device_ids or [])}
    record(
        db,
        actor,
        "campaign.create",
        campaign_id,
        action=action,
        payload_hash=row["payload_hash"],
        targeted=targeted,
        **scope,
    )
    return True, campaign_dict(db, campaign)


def _snapshot(db: Session, campaign_id: str, targets: Any, size: int | None) -> int:
    """One INSERT ... SELECT of every target with its wave; returns how many.

    Waves follow a hash of (campaign, device), not id order, so the first wave is a fair sample; the rows
    go in in device id order (the primary key's), which keeps the index inserts sequential. A device
    matched beyond the count taken for a percentage starts one more wave (``wave_count`` counts it).
    """
    sub = targets.subquery()
    if size is None:
        source = select(
            literal(campaign_id), sub.c.id, sub.c.generation, literal(1, Integer), literal("queued")
        ).order_by(sub.c.id)
    else:
        ranked = select(
            sub.c.id.label("device_id"),
            sub.c.generation,
            func.row_number().over(order_by=(func.md5(literal(campaign_id) + sub.c.id), sub.c.id)).label("rn"),
        ).subquery()
        wave = (ranked.c.rn - 1) // literal(size, Integer) + 1
        source = select(
            literal(campaign_id), ranked.c.device_id, ranked.c.generation, wave, literal("queued")
        ).order_by(ranked.c.device_id)
    columns = ["campaign_id", "device_id", "generation", "wave", "state"]
    return rowcount(db.execute(insert(CampaignTarget).from_select(columns, source)))


def _replay(db: Session, key: str, request_hash: str) -> dict[str, Any] | None:
    row = db.execute(select(Campaign).where(Campaign.idempotency_key == key)).scalar_one_or_none()
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise IdempotencyMismatch(
            f"Idempotency-Key {key!r} was already used for a different campaign", field="Idempotency-Key"
        )
    return campaign_dict(db, row)


def campaign_dict(db: Session, row: Campaign, *, counts: bool = True) -> dict[str, Any]:
    next_wave_at = None
    if row.status == "running" and row.waves_released < row.wave_count and row.last_wave_at is not None:
        next_wave_at = row.last_wave_at + timedelta(seconds=row.interval_seconds or 0)
    data: dict[str, Any] = {
        "id": row.id,
        "status": row.status,
        "reason": row.reason,
        "action": row.action,
        "payload": row.payload,
        "selector": row.selector,
        "note": row.note,
        "idempotency_key": row.idempotency_key,
        "targeted": row.targeted,
        "waves": {
            "size": row.wave_size,
            "percent": row.wave_percent,
            "count": row.wave_count,
            "released": row.waves_released,
            "interval_seconds": row.interval_seconds,
            "min_success_pct": row.min_success_pct,
            "max_failure_pct": row.max_failure_pct,
            "next_at": next_wave_at,
        },
        "expires_in_seconds": row.expires_in_seconds,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "last_wave_at": row.last_wave_at,
        "finished_at": row.finished_at,
    }
    if counts:
        data["counts"] = dict(row.final_counts) if row.final_counts else live_counts(db, row)
        data["counts"]["targeted"] = row.targeted
    return data


def load(db: Session, campaign_id: str, *, lock: bool = False) -> Campaign:
    query = select(Campaign).where(Campaign.id == campaign_id)
    if lock and db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = db.execute(query).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no campaign {campaign_id!r}")
    return row


def get_campaign(db: Session, campaign_id: str) -> dict[str, Any]:
    return campaign_dict(db, load(db, campaign_id))


def list_campaigns(
    db: Session, *, limit: int = 50, before: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    """Newest first (keyset: ``before`` is the last id of the previous page); counts included."""
    query = select(Campaign).order_by(Campaign.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Campaign.id < before)
    if status is not None:
        query = query.where(Campaign.status == status)
    return [campaign_dict(db, row) for row in db.execute(query).scalars()]


def campaign_devices(
    db: Session, campaign_id: str, *, status: str | None = None, limit: int = 100, after: str | None = None
) -> list[dict[str, Any]]:
    """The targets (in one state), by device id: keyset paging with ``after``.

    Each carries the device's model and its ack's ``detail``, so finding why targets failed is one read.
    """
    campaign = load(db, campaign_id)
    if status is not None and status not in DRILL_STATUSES:
        raise InvalidArgument(f"status must be one of {', '.join(DRILL_STATUSES)}", field="status")
    t, d = CampaignTarget, FcmDispatch
    query = (
        select(t.device_id, t.wave, t.state, d.request_id, d.status, d.fcm_status, d.created_at, d.finished_at)
        .add_columns(d.ack_detail, Device.model)
        .outerjoin(d, d.request_id == literal(campaign_id + ":") + t.device_id)
        .outerjoin(Device, Device.id == t.device_id)
        .where(t.campaign_id == campaign_id)
        .order_by(t.device_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(t.device_id > after)
    if status == "queued":
        query = query.where(unreleased(campaign))
    elif status == "cancelled":
        query = query.where((t.state == "cancelled") | (d.status == "cancelled"))
    elif status is not None:
        query = query.where(d.status == status)
    out = []
    for row in db.execute(query).mappings():
        out.append(
            {
                "device_id": row["device_id"],
                "wave": row["wave"],
                "status": row["status"] or ("queued" if row["state"] == "queued" else "cancelled"),
                "request_id": row["request_id"],
                "fcm_status": row["fcm_status"],
                "released_at": row["created_at"],
                "finished_at": row["finished_at"],
                "model": row["model"],
                "detail": row["ack_detail"],
            }
        )
    return out
