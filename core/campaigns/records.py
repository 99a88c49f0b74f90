"""Campaigns: creation (idempotent, with a set-based snapshot of the targets) and what admins read.

Creation writes the campaign row and its targets (``campaign_targets``, each with its wave) in the
caller's transaction, and nothing else: commands are inserted by releases (``core.campaigns.release``).
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.base import validation
from core.base.errors import InvalidArgument, NotFound, OutOfScope
from core.base.ids import new_campaign_id
from core.base.settings import Settings
from core.campaigns import outcomes, snapshot
from core.campaigns.counts import live_counts, skipped_count
from core.campaigns.profile_release import profile_of
from core.campaigns.waves import MAX_EXPIRES_SECONDS as MAX_EXPIRES_SECONDS  # re-exported: defined with waves
from core.campaigns.waves import Waves as Waves
from core.campaigns.waves import percentage as percentage
from core.campaigns.waves import validate_waves as validate_waves
from core.commands.catalogue import catalogue_for
from core.commands.destructive import refuse_unapproved
from core.commands.dispatches import IdempotencyMismatch
from core.devices import scopes, selectors
from core.events.audit import Actor, record
from core.models import Campaign, Device
from core.storage.dialect import insert_for, is_postgresql
from core.storage.types import utcnow

MAX_DEVICE_IDS = 10_000
MIN_EXPIRES_SECONDS = 60


def _request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def max_targets(settings: Settings) -> int:
    return settings.campaign_max_targets or (50_000 if settings.is_sqlite else 1_000_000)


def resolve_targets(
    db: Session,
    settings: Settings,
    *,
    selector: str | None,
    device_ids: list[str] | None,
    scope: str | None = None,
) -> tuple[Any, str | None]:
    """The SELECT of target device ids, and the normalized selector text (None for explicit ids).

    With a ``scope`` (a scoped principal's), only devices inside it: ``all`` means all of the scope, and a
    listed device outside it is "no device", as an unknown one."""
    if (selector is None) == (device_ids is None):
        raise InvalidArgument("give exactly one of selector or device_ids", field="selector")
    if selector is not None:
        if not selector.strip():
            raise InvalidArgument("a campaign needs a selector; write `all` to target every device", field="selector")
        parsed = selectors.parse(selector)
        matching = scopes.restrict(selectors.matching_ids(parsed, settings), scope, settings)
        return matching.add_columns(Device.generation), parsed.text
    ids = device_ids or []
    if not ids:
        raise InvalidArgument("device_ids is empty", field="device_ids")
    if len(ids) > MAX_DEVICE_IDS:
        raise InvalidArgument(f"at most {MAX_DEVICE_IDS:,} device_ids; use a selector", field="device_ids")
    for device_id in ids:
        validation.device_id(device_id, field="device_ids")
    ids = sorted(set(ids))
    known = set(db.execute(scopes.restrict(select(Device.id).where(Device.id.in_(ids)), scope, settings)).scalars())
    missing = [i for i in ids if i not in known]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise NotFound(f"no device {shown}")
    targets = select(Device.id, Device.generation).where(Device.id.in_(ids), Device.revoked_at.is_(None))
    return scopes.restrict(targets, scope, settings), None


def preview(
    db: Session,
    settings: Settings,
    *,
    selector: str | None = None,
    device_ids: list[str] | None = None,
    sample: int = 10,
    scope: str | None = None,
) -> dict[str, Any]:
    """How many devices a campaign would target now, and a few of them (``--dry-run``); writes nothing."""
    ids, _ = resolve_targets(db, settings, selector=selector, device_ids=device_ids, scope=scope)
    sub = ids.subquery()
    count = db.execute(select(func.count()).select_from(sub)).scalar_one()
    names = db.execute(select(sub.c.id).order_by(sub.c.id).limit(sample)).scalars().all()
    return {"matched": count, "sample": list(names)}


def _check_key(idempotency_key: str) -> None:
    validation.request_id(idempotency_key, field="Idempotency-Key")
    if idempotency_key.startswith("profile:"):  # core.campaigns.profile_rollouts names its campaigns so
        raise InvalidArgument(
            "Idempotency-Key may not start with 'profile:' (a profile rollout is named profile:{name}:{version})",
            field="Idempotency-Key",
        )


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
    success_when: str | None = None,
    outcome_timeout_seconds: int | None = None,
    actor: Actor | None = None,
    scope: str | None = None,
    awaiting_approval: bool = False,
) -> tuple[bool, dict[str, Any]]:
    """Create a campaign once per Idempotency-Key; returns ``(created, campaign)``.

    A scoped principal's campaign snapshots only devices inside its ``scope`` and records it: only keys
    of the same scope (and unscoped ones) see it afterwards (:func:`require_in_scope`). A destructive action
    is refused unless ``awaiting_approval``: the campaign is then created in that status, which no release
    touches, by ``core.approvals`` (its release makes it ``running``).

    A repeat with the same body returns the first campaign; the same key with another body is an
    ``IdempotencyMismatch``. Concurrent identical requests meet on the unique key: one inserts, the
    others wait for its commit and replay it.
    """
    _check_key(idempotency_key)
    catalogue_for(settings).check_command(action, payload)
    if not awaiting_approval:
        refuse_unapproved(action, settings)
    validation.text(note, "note", max_length=200)
    plan = validate_waves(waves)
    success_text, outcome_timeout = outcomes.validate(success_when, outcome_timeout_seconds)
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
    if scope is not None:  # absent when unscoped: the hashes of earlier campaigns stay what they were
        body["scope"] = scope
    if success_when is not None:  # absent from older campaigns' hashes: their replays still match
        body |= {"success_when": success_when, "outcome_timeout_seconds": outcome_timeout_seconds}
    request_hash = _request_hash(body)
    existing = _replay(db, idempotency_key, request_hash)
    if existing is not None:
        return False, existing
    targets, selector_text = resolve_targets(db, settings, selector=selector, device_ids=device_ids, scope=scope)
    now = utcnow()
    done = outcomes.satisfied(success_text, settings, now) if success_text is not None else None
    targets = snapshot.judged(targets, done)
    limit = max_targets(settings)
    # counted up to the cap + 1 before anything is written: a refused campaign costs one bounded scan, not a
    # snapshot of the whole fleet rolled back (issue #21); under the cap it is the exact count a percentage needs
    matching, already = snapshot.counts(db, targets, limit + 1)
    if matching > limit:
        raise InvalidArgument(f"more than {limit:,} devices match; at most {limit:,} (NEXMDM_CAMPAIGN_MAX_TARGETS)")
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
        "scope": scope,
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
        "success_when": success_text,
        "outcome_timeout_seconds": outcome_timeout,
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
    if plan.percent is not None:  # of the devices that need the command (the satisfied are skipped)
        size: int | None = max(1, math.ceil((matching - already) * plan.percent / 100))
    else:
        size = plan.size
    targeted = snapshot.insert_targets(db, campaign_id, targets, size)
    if targeted == 0:  # the caller's transaction rolls back: nothing was written
        raise InvalidArgument("no device matches: a campaign needs at least one target", field="selector")
    if targeted > limit:  # devices enrolled between the count and the snapshot
        raise InvalidArgument(f"{targeted:,} devices match; at most {limit:,} (NEXMDM_CAMPAIGN_MAX_TARGETS)")
    todo = targeted - (skipped_count(db, campaign_id) if done is not None else 0)
    size = min(size or todo, todo)
    campaign = load(db, campaign_id)
    campaign.targeted, campaign.wave_size = targeted, size
    campaign.wave_count = math.ceil(todo / size) if size else 0
    db.flush()
    # one row for the whole fan-out: what was asked (selector or how many ids) and how many it reached
    asked = {"selector": selector} if selector is not None else {"device_ids": len(device_ids or [])}
    record(
        db,
        actor,
        "campaign.create",
        campaign_id,
        action=action,
        payload_hash=row["payload_hash"],
        targeted=targeted,
        **asked,
    )
    return True, campaign_dict(db, campaign)


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
        "kind": row.kind,
        "profile": profile_of(row),
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
        "success_when": row.success_when,
        "outcome_timeout_seconds": row.outcome_timeout_seconds,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "last_wave_at": row.last_wave_at,
        "finished_at": row.finished_at,
        "scope": row.scope,
    }
    if counts:
        data["counts"] = dict(row.final_counts) if row.final_counts else live_counts(db, row)
        # frozen before outcomes existed: nothing was skipped, and an ack was the success
        data["counts"].setdefault("skipped", 0)
        data["counts"].setdefault("succeeded", data["counts"].get("acked", 0))
        data["counts"]["targeted"] = row.targeted
    return data


def load(db: Session, campaign_id: str, *, lock: bool = False) -> Campaign:
    query = select(Campaign).where(Campaign.id == campaign_id)
    if lock and is_postgresql(db):
        query = query.with_for_update()
    row = db.execute(query).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no campaign {campaign_id!r}")
    return row


def get_campaign(db: Session, campaign_id: str) -> dict[str, Any]:
    return campaign_dict(db, load(db, campaign_id))


def require_in_scope(db: Session, campaign_id: str, scope: str | None) -> str:
    """Whether a principal with ``scope`` may read and act on a campaign; returns its id.

    The rule: an unscoped principal reaches every campaign; a scoped one reaches exactly the campaigns
    created under the same scope (the same normalized selector text), whoever created them. An unscoped
    campaign is 403 ``out_of_scope`` for it (it reaches devices outside the scope); a campaign of another
    scope is ``NotFound``, as its devices are.
    """
    if scope is None:
        return campaign_id
    row = db.execute(select(Campaign.scope).where(Campaign.id == campaign_id)).first()
    if row is None or (row.scope is not None and row.scope != scope):
        raise NotFound(f"no campaign {campaign_id!r}")
    if row.scope is None:
        raise OutOfScope(
            f"campaign {campaign_id!r} was created without a scope; a key scoped to {scope} cannot reach it"
        )
    return campaign_id


def list_campaigns(
    db: Session,
    *,
    limit: int = 50,
    before: str | None = None,
    status: str | None = None,
    scope: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first (keyset: ``before`` is the last id of the previous page); counts included.

    With a ``scope``: only the campaigns created under that scope (:func:`require_in_scope`)."""
    query = select(Campaign).order_by(Campaign.id.desc()).limit(limit)
    if scope is not None:
        query = query.where(Campaign.scope == scope)
    if before is not None:
        query = query.where(Campaign.id < before)
    if status is not None:
        query = query.where(Campaign.status == status)
    return [campaign_dict(db, row) for row in db.execute(query).scalars()]
