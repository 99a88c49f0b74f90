"""The fleet at a glance: what ``nexmdm top`` shows and the fleet-state gauges on ``/metrics`` export.

Every query here is bounded by an index, so that one refresh stays cheap at 100,000 devices and
10 million heartbeats (``make bench`` measures it):

* device states are counted in one pass over ``devices`` (every state needs every device: no fewer rows
  can answer it), by ranges of ``last_seen_at``;
* heartbeats of the last minute by a range of ``device_heartbeats.bucket_start`` (its index; on
  PostgreSQL the range also prunes every partition but today's);
* commands by the ``(status, created_at)`` and ``created_at`` indexes, over the last hour; latency
  percentiles over the newest ``LATENCY_SAMPLE`` of them;
* devices that went offline in the last hour by a range of ``last_seen_at``;
* profile compliance (compliant, noncompliant, pending, unknown) of the unrevoked devices in that same
  pass: the state is stored on the device (``devices.compliance_state``, ``core.profiles.grace``), so these
  are four more filtered counts, as the gauge ``nexmdm_fleet_compliance_devices`` and ``nexmdm compliance``
  count them (``core.profiles.compliance.summary``, a ``GROUP BY`` of the same column);
* campaigns in flight by the ``status`` index of ``campaigns``, each shown counted the way ``nexmdm
  campaigns show`` counts it (``core.campaigns.counts.live_counts``: ranges of the ``campaign_id`` indexes);
  the gauges' sums over all of them in one statement (``campaign_totals``).

With a selector (``nexmdm top --selector``), the device states, the compliance, the heartbeats of the
last minute and the went-offline list are those of the matching devices, with the clause ``nexmdm devices list
--selector`` uses: a label term is an ``EXISTS`` over the ``(key, value, device_id)`` label index,
``@state`` and ``@agent_version`` comparisons use their indexes, and the other terms (negations,
``@battery_pct``, ``@plugged``, ``@model``, ``@os_version``, ``@network_type``) read every device: those
statements run under ``NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS`` (``snapshot``). Commands, the push queue,
latencies and campaigns stay fleet-wide.

Nothing here scans the whole heartbeat or dispatch table, and nothing commits.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, select, text
from sqlalchemy.orm import Session

from core.base.settings import Settings
from core.campaigns.counts import STATUS_COUNTS
from core.campaigns.records import campaign_dict
from core.commands.push import queue_stats
from core.devices import compliance_terms
from core.devices.scopes import scope_clause, scoped_ids
from core.devices.selectors import Selector, matching_ids, terms_clause
from core.models import (
    CAMPAIGN_FINAL,
    CAMPAIGN_STATUSES,
    COMMAND_STATUSES,
    Campaign,
    CampaignTarget,
    Device,
    DeviceHeartbeat,
    FcmDispatch,
)
from core.storage.dialect import is_postgresql
from core.storage.timeouts import selector_reads
from core.storage.types import utcnow

DEVICE_STATES = ("online", "stale", "offline", "revoked")
#: heartbeat rate window
RATE_WINDOW = timedelta(minutes=1)
#: commands (by status, latencies) and went-offline devices look this far back
RECENT_WINDOW = timedelta(hours=1)
PERCENTILES = (50, 99)
#: campaigns that have started and not ended (running, paused, halted); one awaiting its approval has not started
IN_FLIGHT = tuple(status for status in CAMPAIGN_STATUSES if status not in (*CAMPAIGN_FINAL, "awaiting_approval"))
#: ``nexmdm top`` details at most this many campaigns in flight (newest first) and counts the rest
CAMPAIGNS_SHOWN = 5
#: a device's inventory is fresh while the server knew it current this recently (a report, or a heartbeat
#: carrying its hash: ``devices.inventory_seen_at``)
INVENTORY_FRESH = timedelta(days=1)


def device_counts(
    db: Session,
    settings: Settings,
    now: datetime | None = None,
    *,
    selector: Selector | None = None,
    scope: str | None = None,
    inventory: bool = False,
    compliance: bool = False,
) -> dict[str, int]:
    """Devices by state: ``online``, ``stale``, ``offline`` (including never heard from), ``revoked``.

    With a selector: the devices its terms match, revoked ones included (counted as ``revoked``); with a
    principal's ``scope`` (``core.devices.scopes``), the devices inside it only. With
    ``inventory``, in the same pass, the unrevoked devices whose inventory is not known current:
    ``inventory_old`` (last known current more than ``INVENTORY_FRESH`` ago) and ``inventory_never``; with
    ``compliance``, the unrevoked devices per compliance state as ``compliance_STATE``."""
    now = now or utcnow()
    chosen = [] if selector is None else [terms_clause(selector, settings, now)]
    if scope is not None:
        chosen.append(scope_clause(scope, settings, now))
    online_since = now - timedelta(seconds=settings.device_online_seconds)
    stale_since = now - timedelta(seconds=settings.device_offline_seconds)
    live = Device.revoked_at.is_(None)
    # one pass over the devices (a count of every state cannot touch fewer rows); ranges of last_seen_at
    states = compliance_terms.STATES if compliance else ()
    total, revoked, online, stale, old, never, *by_state = db.execute(
        select(
            func.count(),
            func.count(Device.revoked_at),
            func.count().filter(live, Device.last_seen_at >= online_since),
            func.count().filter(live, Device.last_seen_at >= stale_since, Device.last_seen_at < online_since),
            func.count().filter(live, Device.inventory_seen_at < now - INVENTORY_FRESH),
            func.count().filter(live, Device.inventory_seen_at.is_(None)),
            *(func.count().filter(live, compliance_terms.state_expr() == state) for state in states),
        )
        .select_from(Device)
        .where(*chosen)
    ).one()
    offline = total - revoked - online - stale
    counts = {"online": online, "stale": stale, "offline": offline, "revoked": revoked, "total": total}
    counts |= {f"compliance_{state}": int(n) for state, n in zip(states, by_state, strict=True)}
    return counts | ({"inventory_old": old, "inventory_never": never} if inventory else {})


def heartbeat_rate(
    db: Session,
    settings: Settings,
    now: datetime | None = None,
    *,
    selector: Selector | None = None,
    scope: str | None = None,
) -> dict[str, Any]:
    """Heartbeats stored over the last minute (one row per device and bucket) and the rate per second;
    with a selector, those of the matching devices (``settings`` gives its ``@state`` terms' thresholds)."""
    now = now or utcnow()
    window = [DeviceHeartbeat.bucket_start >= now - RATE_WINDOW]
    if selector is not None:
        window.append(DeviceHeartbeat.device_id.in_(matching_ids(selector, settings, now)))
    if scope is not None:
        window.append(DeviceHeartbeat.device_id.in_(scoped_ids(scope, settings)))
    stored = db.scalar(select(func.count()).select_from(DeviceHeartbeat).where(*window))
    stored = int(stored or 0)
    return {"window_seconds": int(RATE_WINDOW.total_seconds()), "stored": stored, "per_second": stored / 60}


def command_counts(db: Session, now: datetime | None = None, *, within: Select[Any] | None = None) -> dict[str, Any]:
    """Commands created in the last hour by status, and every command still pending (``within``: of these
    devices only, a SELECT of device ids: a scope's)."""
    now = now or utcnow()
    only = [] if within is None else [FcmDispatch.device_id.in_(within)]
    rows = db.execute(
        select(FcmDispatch.status, func.count())
        .where(FcmDispatch.created_at >= now - RECENT_WINDOW, *only)
        .group_by(FcmDispatch.status)
    ).all()
    last_hour = dict.fromkeys(COMMAND_STATUSES, 0) | {status: int(n) for status, n in rows}
    pending = db.scalar(select(func.count()).select_from(FcmDispatch).where(FcmDispatch.status == "pending", *only))
    return {"last_hour": last_hour, "pending": int(pending or 0)}


def _nearest_rank(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    index = math.ceil(pct / 100 * len(values)) - 1
    return values[max(0, min(len(values) - 1, index))]


#: latency percentiles are taken over at most this many of the newest commands of the last hour
LATENCY_SAMPLE = 5000

_PG_LATENCY = text(
    """
    SELECT count(sent_at), percentile_disc(ARRAY[0.5, 0.99]) WITHIN GROUP (
               ORDER BY extract(epoch FROM sent_at - created_at) * 1000) FILTER (WHERE sent_at IS NOT NULL),
           count(acked_at), percentile_disc(ARRAY[0.5, 0.99]) WITHIN GROUP (
               ORDER BY extract(epoch FROM acked_at - created_at) * 1000) FILTER (WHERE acked_at IS NOT NULL)
    FROM (SELECT created_at, sent_at, acked_at FROM fcm_dispatches
          WHERE created_at >= :since ORDER BY created_at DESC LIMIT :sample) newest
    """
)


def latencies(db: Session, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Push latency (created → FCM accepted) and ack latency (created → acked, pushed or not), p50 and p99
    in milliseconds, over the newest ``LATENCY_SAMPLE`` commands created in the last hour (the
    ``created_at`` index bounds the read however busy the hour was)."""
    since = (now or utcnow()) - RECENT_WINDOW
    if is_postgresql(db):
        push_n, push, ack_n, ack = db.execute(_PG_LATENCY, {"since": since, "sample": LATENCY_SAMPLE}).one()
        return {
            "push_latency_ms": _named(push_n, push),
            "ack_latency_ms": _named(ack_n, ack),
        }
    rows = db.execute(
        select(FcmDispatch.created_at, FcmDispatch.sent_at, FcmDispatch.acked_at)
        .where(FcmDispatch.created_at >= since)
        .order_by(FcmDispatch.created_at.desc())
        .limit(LATENCY_SAMPLE)
    ).all()
    result = {}
    for name, index in (("push_latency_ms", 1), ("ack_latency_ms", 2)):
        pairs = [(row[0], row[index]) for row in rows]
        values = sorted(max(0.0, (end - begin).total_seconds() * 1000) for begin, end in pairs if end is not None)
        result[name] = {"p50": _nearest_rank(values, 50), "p99": _nearest_rank(values, 99), "count": len(values)}
    return result


def _named(count: int, pcts: list[float] | None) -> dict[str, Any]:
    p50, p99 = (float(v) if v is not None else None for v in (pcts or (None, None)))
    return {"p50": p50, "p99": p99, "count": int(count or 0)}


def went_offline(
    db: Session,
    settings: Settings,
    now: datetime | None = None,
    *,
    limit: int = 10,
    selector: Selector | None = None,
    scope: str | None = None,
) -> dict[str, Any]:
    """Devices that crossed the offline threshold in the last hour (not revoked), most recent first."""
    now = now or utcnow()
    horizon = now - timedelta(seconds=settings.device_offline_seconds)
    where = [Device.revoked_at.is_(None), Device.last_seen_at < horizon, Device.last_seen_at >= horizon - RECENT_WINDOW]
    if selector is not None:
        where.append(terms_clause(selector, settings, now))
    if scope is not None:
        where.append(scope_clause(scope, settings, now))
    count = db.scalar(select(func.count()).select_from(Device).where(*where)) or 0
    rows = db.execute(
        select(Device.id, Device.last_seen_at).where(*where).order_by(Device.last_seen_at.desc()).limit(limit)
    ).all()
    return {
        "count": int(count),
        "items": [
            {"device_id": device_id, "last_seen_at": seen, "offline_since": seen + (now - horizon)}
            for device_id, seen in rows
            if seen is not None  # (the filter guarantees it)
        ],
    }


def oldest_heartbeat_age(db: Session, now: datetime | None = None) -> float | None:
    """Seconds since the oldest stored heartbeat (``None``: none stored); retention keeps it bounded."""
    oldest = db.scalar(select(func.min(DeviceHeartbeat.bucket_start)))
    return ((now or utcnow()) - oldest).total_seconds() if oldest is not None else None


def _progress(campaign: dict[str, Any]) -> dict[str, Any]:
    waves = campaign["waves"]
    return {
        **{key: campaign[key] for key in ("id", "status", "reason", "action", "selector", "note", "targeted")},
        "waves": {"released": waves["released"], "count": waves["count"], "next_at": waves["next_at"]},
        "counts": campaign["counts"],
        "created_at": campaign["created_at"],
    }


def campaigns_in_flight(db: Session, *, limit: int = CAMPAIGNS_SHOWN, scope: str | None = None) -> dict[str, Any]:
    """Campaigns in flight (running, paused, halted), newest first: at most ``limit`` of them with their
    waves and counts (those of ``nexmdm campaigns show``), how many there are, and how many are not shown.
    With a ``scope``: the campaigns created under it (``core.campaigns.require_in_scope``'s rule)."""
    in_flight: ColumnElement[bool] = Campaign.status.in_(IN_FLIGHT)
    if scope is not None:
        in_flight = and_(in_flight, Campaign.scope == scope)
    total = int(db.scalar(select(func.count()).select_from(Campaign).where(in_flight)) or 0)
    rows = db.execute(select(Campaign).where(in_flight).order_by(Campaign.id.desc()).limit(limit)).scalars()
    items = [_progress(campaign_dict(db, row)) for row in rows] if limit > 0 else []
    # two statements, no common snapshot (READ COMMITTED): a campaign created or ended between them must
    # not make the count disagree with the rows (a negative "more", a phantom row in the view)
    total = max(total, len(items))
    return {"in_flight": total, "items": items, "more": max(0, total - len(items))}


def campaign_totals(db: Session) -> dict[str, dict[str, int]]:
    """For the gauges: campaigns by status (every status, 0 when none), and the targets of the campaigns in
    flight by status (``queued + pending + acked + failed + expired + cancelled``).

    The figures of ``live_counts`` of each campaign in flight added up, in one statement whatever the number
    of campaigns (paused and halted ones may sit for weeks): over the campaigns in flight (the ``status``
    index), sums of correlated counts, each one range of a ``campaign_id`` index, the ranges
    ``live_counts`` reads (so the planner cannot pick another join order on a big table). Targets: the
    unreleased ones (waves after ``waves_released``, and the rest of a wave interrupted at
    ``release_cursor``) and those cancelled before their release, so that released targets are never
    read; commands: by status, index-only."""
    rows = db.execute(select(Campaign.status, func.count()).group_by(Campaign.status)).all()
    by_status = dict.fromkeys(CAMPAIGN_STATUSES, 0) | {status: int(n) for status, n in rows}
    t, c, d = CampaignTarget, Campaign, FcmDispatch

    def each(table: Any, *where: ColumnElement[bool]) -> Any:
        per_campaign = select(func.count()).select_from(table).where(table.campaign_id == c.id, *where)
        return func.coalesce(func.sum(per_campaign.scalar_subquery()), 0)

    released = [status for status in STATUS_COUNTS if status != "queued"]  # the statuses of a command
    waiting = c.targeted - c.waves_released * c.wave_size  # targets in the waves after the released ones
    figures = db.execute(
        select(
            # the later waves' size is arithmetic (``live_counts``), minus their cancelled targets
            func.coalesce(func.sum(case((waiting > 0, waiting), else_=0)), 0)
            - each(t, t.state == "cancelled", t.wave > c.waves_released),
            # a NULL release_cursor (no wave interrupted) compares to NULL: none of that campaign's targets
            each(t, t.state == "queued", t.wave == c.waves_released, t.device_id > c.release_cursor),
            each(t, t.state == "cancelled"),
            *(each(d, d.status == status) for status in released),
        ).where(c.status.in_(IN_FLIGHT))
    ).one()
    later, rest_of_wave, cancelled, *commands = (int(n) for n in figures)
    totals = {"queued": later + rest_of_wave} | dict(zip(released, commands, strict=True))
    totals["cancelled"] += cancelled  # before their release (targets) and after (commands)
    return {"campaigns": by_status, "targets": {status: totals[status] for status in STATUS_COUNTS}}


def snapshot(
    db: Session,
    settings: Settings,
    now: datetime | None = None,
    *,
    offline_limit: int = 10,
    selector: Selector | None = None,
    campaign_limit: int = CAMPAIGNS_SHOWN,
    scope: str | None = None,
) -> dict[str, Any]:
    """Everything ``nexmdm top`` shows, from one consistent ``now``; ``selector`` narrows the device figures
    (states, heartbeats, went offline), the rest is fleet-wide.

    A principal's ``scope`` (the console's overview for ``operator@store=42``) narrows the device figures,
    the commands and the campaigns to it; the push queue and the latencies stay the service's own figures
    (they name no device).

    With a selector, its statements run first, under ``NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS`` on
    PostgreSQL (``core.storage.timeouts.selector_reads``: a term without an index reads every device); past it
    ``SelectorTooSlow`` is raised. The fleet-wide statements keep the database's own limit."""
    now = now or utcnow()
    limited = nullcontext() if selector is None else selector_reads(db, settings, selector.text)
    with limited:
        devices = device_counts(db, settings, now, selector=selector, scope=scope, inventory=True, compliance=True)
        inventory = {"older_than_a_day": devices.pop("inventory_old"), "never": devices.pop("inventory_never")}
        # in the devices' one pass: what the gauge's function (``compliance.summary``) counts
        compliant = {state: devices.pop(f"compliance_{state}") for state in compliance_terms.STATES}
        heartbeats = heartbeat_rate(db, settings, now, selector=selector, scope=scope)
        offline = went_offline(db, settings, now, limit=offline_limit, selector=selector, scope=scope)
    within = None if scope is None else scoped_ids(scope, settings)
    return {
        "at": now,
        "selector": None if selector is None else selector.text,
        "devices": devices,
        "inventory_stale": inventory,
        "compliance": compliant,
        "heartbeats": heartbeats,
        "commands": command_counts(db, now, within=within),
        "push_queue": queue_stats(db, now),
        "latency": latencies(db, now),
        "went_offline": offline,
        "campaigns": campaigns_in_flight(db, limit=campaign_limit, scope=scope),
    }
