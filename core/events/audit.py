"""The audit trail: one ``audit_events`` row per admin change, written in the change's own transaction.

Core functions that change state take an ``actor`` and call :func:`record` before they return, so the
API and the CLI cannot drift: a change that rolls back leaves no row, a row always means the change
happened. Refusals (403s and failed admin authentications) are aggregates, see :func:`record_denied`.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from core.base.errors import InvalidArgument
from core.models import AuditEvent
from core.storage.dialect import insert_for
from core.storage.operations import rowcount
from core.storage.types import utcnow

_TABLE: Table = AuditEvent.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Actor:
    """Who made a change: ``key:NAME``, ``cli:USER@HOST``, ``system:worker`` or ``system:remediation``, with the
    client address."""

    name: str
    address: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


SYSTEM = Actor("system:worker")
#: the commands a profile sends on its own (``core.profiles.remediation``)
REMEDIATION = Actor("system:remediation")


def key_actor(key_name: str, address: str | None, scope: str | None = None) -> Actor:
    """An admin key; a scoped key's rows carry its ``scope`` in their details."""
    return Actor(f"key:{key_name}", address, {"scope": scope} if scope is not None else {})


def cli_actor() -> Actor:
    """The effective user at this host. Attribution, not authentication: ``SUDO_USER`` goes in the details."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        user = str(os.geteuid())
    details = {"sudo_user": os.environ["SUDO_USER"]} if os.environ.get("SUDO_USER") else {}
    return Actor(f"cli:{user}@{socket.gethostname()}", None, details)


def record(
    db: Session, actor: Actor | None, action: str, target: str | None = None, /, **details: Any
) -> dict[str, Any] | None:
    """Add one ``success`` row in the caller's transaction (``actor=None``: an unattributed internal call)."""
    return _row(db, actor, "success", action, target, details)


def record_each(db: Session, actor: Actor, action: str, rows: list[tuple[str, dict[str, Any]]]) -> int:
    """One ``success`` row per ``(target, details)`` of a set-based change, in one INSERT; returns how many."""
    if not rows:
        return 0
    at = utcnow()
    values = [
        {
            "at": at,
            "actor": actor.name[:200],
            "action": action,
            "target": target[:300],
            "client_address": actor.address,
            "outcome": "success",
            "details": ({k: v for k, v in details.items() if v is not None} | actor.details) or None,
            "count": 1,
        }
        for target, details in rows
    ]
    db.execute(insert(_TABLE), values)
    return len(values)


def record_refusal(
    db: Session, actor: Actor | None, action: str, target: str | None = None, /, **details: Any
) -> dict[str, Any] | None:
    """Add one ``denied`` row about one refused change (its reason in ``details``), not an aggregate.

    For refusals worth a row each (an approval by the requester or of a closed request): the caller
    commits it although the change itself did not happen.
    """
    return _row(db, actor, "denied", action, target, details)


def _row(
    db: Session, actor: Actor | None, outcome: str, action: str, target: str | None, details: dict[str, Any]
) -> dict[str, Any] | None:
    if actor is None:
        return None
    values = {
        "at": utcnow(),
        "actor": actor.name[:200],
        "action": action,
        "target": target[:300] if target else None,
        "client_address": actor.address,
        "outcome": outcome,
        "details": ({k: v for k, v in details.items() if v is not None} | actor.details) or None,
        "count": 1,
    }
    db.execute(insert(_TABLE).values(**values))
    return values


def minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def record_denied(db: Session, *, actor: str, action: str, address: str | None, at: datetime, count: int = 1) -> None:
    """Add ``count`` refusals to the aggregate row of (actor, action, address, minute): one upsert, no new row."""
    bucket = minute(at)
    key = f"denied|{actor}|{action}|{address or ''}|{bucket.isoformat()}"[:400]
    values = {
        "at": bucket,
        "actor": actor[:200],
        "action": action,
        "client_address": address,
        "outcome": "denied",
        "count": count,
        "aggregate_key": key,
    }
    statement = insert_for(db, _TABLE).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[_TABLE.c.aggregate_key], set_={"count": _TABLE.c.count + statement.excluded.count}
    )
    db.execute(statement)


def event_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at,
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "client_address": row.client_address,
        "outcome": row.outcome,
        "count": row.count,
        "details": row.details or {},
    }


#: a position in the trail, newest first: (``at``, ``id``). Refusal rows carry the start of their minute
#: but are written (and numbered) later, so the trail is ordered by time, then id, never by id alone.
Position = tuple[datetime, int]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(r"([0-9]{1,18})(?:-([0-9]{1,18}))?")


def cursor_of(event: dict[str, Any]) -> str:
    """The keyset cursor after ``event``: its time in microseconds since the epoch and its id (``US-ID``)."""
    return f"{(event['at'] - _EPOCH) // timedelta(microseconds=1)}-{event['id']}"


def parse_cursor(text: str) -> Position | int:
    """A cursor of :func:`cursor_of`; a bare id (the cursor before events were ordered by time) still works."""
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise InvalidArgument("cursor must be the next_cursor of a previous page", field="cursor")
    head, tail = match.groups()
    if tail is None:
        return int(head)
    return _EPOCH + timedelta(microseconds=int(head)), int(tail)


def _after(before: Position | int) -> Any:
    """Rows that come after ``before`` in (at, id) descending order."""
    if isinstance(before, int):  # a bare id: the position of that row (or, if it is gone, ids below it)
        row_at = select(_TABLE.c.at).where(_TABLE.c.id == before).scalar_subquery()
        return or_(
            _TABLE.c.at < row_at,
            and_(_TABLE.c.at == row_at, _TABLE.c.id < before),
            and_(row_at.is_(None), _TABLE.c.id < before),
        )
    at, event_id = before
    return or_(_TABLE.c.at < at, and_(_TABLE.c.at == at, _TABLE.c.id < event_id))


def _query(
    *,
    since: datetime | None,
    actor: str | None,
    action: str | None,
    outcome: str | None,
    before: Position | int | None,
    target: str | None = None,
) -> Any:
    query = select(_TABLE)
    if target is not None:
        query = query.where(_TABLE.c.target == target)
    if since is not None:
        query = query.where(_TABLE.c.at >= since)
    if actor:
        query = query.where(_TABLE.c.actor == actor)
    if action:
        # ``device.*`` (or ``device.``) selects a family of actions
        if action.endswith(".*") or action.endswith("."):
            query = query.where(_TABLE.c.action.startswith(action.rstrip("*"), autoescape=True))
        else:
            query = query.where(_TABLE.c.action == action)
    if outcome:
        query = query.where(_TABLE.c.outcome == outcome)
    if before is not None:
        query = query.where(_after(before))
    return query.order_by(_TABLE.c.at.desc(), _TABLE.c.id.desc())


def list_events(
    db: Session,
    *,
    since: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    before: Position | int | None = None,
    limit: int = 100,
    target: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first by (time, id); keyset: ``before`` is the previous page's last (at, id) (or a bare id).
    ``target``: only the events about one thing (a device id, a campaign id)."""
    query = _query(since=since, actor=actor, action=action, outcome=outcome, before=before, target=target)
    query = query.limit(limit)
    return [event_dict(row) for row in db.execute(query)]


def iter_events(
    db: Session,
    *,
    since: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    batch: int = 1000,
) -> Iterator[dict[str, Any]]:
    """Every matching event, newest first, read in keyset pages: memory stays flat whatever the count."""
    before: Position | None = None
    while True:
        rows = list_events(db, since=since, actor=actor, action=action, outcome=outcome, before=before, limit=batch)
        yield from rows
        if len(rows) < batch:
            return
        before = rows[-1]["at"], rows[-1]["id"]


def count_events(db: Session) -> int:
    return int(db.scalar(select(func.count()).select_from(_TABLE)) or 0)


def delete_older_than(db: Session, cutoff: datetime, *, batch: int) -> int:
    """Delete one batch of rows older than ``cutoff`` (oldest first, by ``at``); returns how many."""
    ids = select(_TABLE.c.id).where(_TABLE.c.at < cutoff).order_by(_TABLE.c.at).limit(batch)
    return rowcount(db.execute(delete(_TABLE).where(_TABLE.c.id.in_(ids.scalar_subquery()))))


def retention_cutoff(days: int) -> datetime:
    return utcnow() - timedelta(days=days)
