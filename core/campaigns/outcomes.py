"""Outcome-gated campaigns: a target succeeds when its device matches ``success_when`` after the ack.

A campaign with ``success_when`` (a selector) judges each target by what changed on the device, not by
the ack. At the snapshot, targets whose device already matches are ``skipped`` (``already_satisfied``,
no command; ``core.campaigns.snapshot``). After a ``completed`` ack the target waits; it becomes
``succeeded`` once its device matches — checked for one device by :func:`check_device` (the heartbeat and
inventory paths call it when something of the device changed) and for the whole campaign by
:func:`sweep` (each maintenance round, set-based) — or ``failed`` with reason ``outcome_timeout`` once
``outcome_timeout_seconds`` have passed since the ack without a match. A device that matches when it is
checked has succeeded, even when the check comes late (a restart, a slow sweep): the timeout judges the
device, never the server's delay. Every decision is a row in ``campaign_targets``, so a restart resumes
from the database.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, literal, select, update
from sqlalchemy.orm import Session

from core.base.errors import InvalidArgument
from core.base.settings import Settings, get_settings
from core.devices import selectors
from core.models import Campaign, CampaignTarget, Device, FcmDispatch
from core.storage.operations import rowcount
from core.storage.types import utcnow

DEFAULT_OUTCOME_TIMEOUT_SECONDS = 3600
MIN_OUTCOME_TIMEOUT_SECONDS = 60
MAX_OUTCOME_TIMEOUT_SECONDS = 30 * 86400
ALREADY_SATISFIED = "already_satisfied"
OUTCOME_TIMEOUT = "outcome_timeout"
#: the maintenance loop decides a campaign's waiting targets at most this often (the set-based sweep reads
#: every waiting target: ~70-150 ms for 66,000 on a loaded 2-core PostgreSQL); ``check_device`` meanwhile
#: decides a device as soon as its inventory or heartbeat changes
SWEEP_EVERY_SECONDS = 5.0
#: campaigns whose targets may still change (``core.campaigns.release.ACTIVE``)
_ACTIVE = ("running", "paused", "halted")


def validate(success_when: str | None, timeout: int | None) -> tuple[str | None, int | None]:
    """The normalized ``success_when`` and its timeout (None, None without one); nonsense is refused."""
    if success_when is None:
        if timeout is not None:
            raise InvalidArgument("outcome_timeout_seconds needs success_when", field="outcome_timeout_seconds")
        return None, None
    if not success_when.strip() or success_when.strip() == "all":
        raise InvalidArgument("success_when must name what a device has once it succeeded", field="success_when")
    try:
        parsed = selectors.parse(success_when)
    except selectors.InvalidSelector as exc:
        exc.field = "success_when"
        exc.message = exc.message.replace("invalid selector", "invalid success_when", 1)
        exc.args = (exc.message,)
        raise
    timeout = DEFAULT_OUTCOME_TIMEOUT_SECONDS if timeout is None else timeout
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int)
        or not (MIN_OUTCOME_TIMEOUT_SECONDS <= timeout <= MAX_OUTCOME_TIMEOUT_SECONDS)
    ):
        raise InvalidArgument("outcome_timeout_seconds must be 60 s to 30 days", field="outcome_timeout_seconds")
    return parsed.text, timeout


def satisfied(success_when: str, settings: Settings, now: datetime | None = None) -> ColumnElement[bool]:
    """The condition on ``devices`` that a target's device meets once it succeeded."""
    return selectors.where_clause(selectors.parse(success_when), settings, now)


def _acked(campaign_id: str, *, before: datetime | None = None) -> ColumnElement[bool]:
    """The target's command of this campaign was acked (``completed``), before ``before`` if given."""
    t, d = CampaignTarget, FcmDispatch
    query = select(d.id).where(
        d.request_id == literal(campaign_id + ":") + t.device_id, d.campaign_id == campaign_id, d.status == "acked"
    )
    if before is not None:
        query = query.where(d.acked_at < before)
    return exists(query)


def sweep_due(campaign: Campaign, now: datetime) -> bool:
    """Whether the maintenance loop should sweep the campaign now (never swept, or not for a while)."""
    swept = campaign.outcome_swept_at
    return swept is None or not (now - timedelta(seconds=SWEEP_EVERY_SECONDS) < swept <= now)


def sweep(db: Session, campaign: Campaign, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Decide every acked target of one campaign that can be decided now: two set-based UPDATEs.

    Matching first (a device that matches is a success even past its timeout), then the timeouts.
    Returns ``{"succeeded": n, "failed": n}`` decided by this call.
    """
    if campaign.success_when is None:
        return {"succeeded": 0, "failed": 0}
    now = now or utcnow()
    campaign.outcome_swept_at = now
    t = CampaignTarget
    waiting = and_(t.campaign_id == campaign.id, t.state == "queued")
    matches = exists(select(Device.id).where(Device.id == t.device_id, satisfied(campaign.success_when, settings, now)))
    succeeded = db.execute(
        update(t)
        .where(waiting, _acked(campaign.id), matches)
        .values(state="succeeded", outcome_at=now)
        .execution_options(synchronize_session=False)
    )
    timeout = timedelta(seconds=campaign.outcome_timeout_seconds or DEFAULT_OUTCOME_TIMEOUT_SECONDS)
    failed = db.execute(
        update(t)
        .where(waiting, _acked(campaign.id, before=now - timeout))
        .values(state="failed", reason=OUTCOME_TIMEOUT, outcome_at=now)
        .execution_options(synchronize_session=False)
    )
    return {"succeeded": rowcount(succeeded), "failed": rowcount(failed)}


def check_device(
    db: Session, device_id: str, settings: Settings | None = None, now: datetime | None = None
) -> list[str]:
    """Succeed the device's acked targets whose campaign's ``success_when`` it matches now.

    Cheap for the hot paths: one indexed read (the device's waiting targets in outcome-gated campaigns
    with an acked command; nothing for a device in none), then one UPDATE per campaign it matches.
    Returns the ids of the campaigns in which the device succeeded. The caller owns the transaction.
    """
    t, c, d = CampaignTarget, Campaign, FcmDispatch
    rows = db.execute(
        select(c.id, c.success_when)
        .join(t, t.campaign_id == c.id)
        .join(d, d.request_id == t.campaign_id + literal(":") + t.device_id)
        .where(
            t.device_id == device_id,
            t.state == "queued",
            c.success_when.is_not(None),
            c.status.in_(_ACTIVE),
            d.status == "acked",
        )
    ).all()
    if not rows:
        return []
    settings = settings or get_settings()
    now = now or utcnow()
    done = []
    for campaign_id, success_when in rows:
        matches = exists(select(Device.id).where(Device.id == device_id, satisfied(str(success_when), settings, now)))
        result = db.execute(
            update(t)
            .where(t.campaign_id == campaign_id, t.device_id == device_id, t.state == "queued", matches)
            .values(state="succeeded", outcome_at=now)
            .execution_options(synchronize_session=False)
        )
        if rowcount(result):
            done.append(campaign_id)
    return done
