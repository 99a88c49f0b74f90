"""Webhook endpoints and the outbox: ``emit`` writes one outbox row per subscribed endpoint in the caller's
transaction (an event exists exactly when its change committed); ``core.events.sender`` sends them.

Each POST is signed like Stripe's: ``NexMDM-Signature: t=UNIX,v1=HEX``, HEX being the HMAC-SHA256 of
``f"{t}.{body}"`` with the endpoint's secret. The secret must be kept to sign (an HMAC key cannot be a
hash); it is shown once at creation and never listed, logged or put in an audit row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from core.base.errors import InvalidArgument, NotFound
from core.base.event_types import EVENT_TYPES as EVENT_TYPES  # re-exported: defined in core.base
from core.base.event_types import TEST_EVENT as TEST_EVENT
from core.events.audit import Actor, record
from core.models import WebhookEndpoint, WebhookOutbox
from core.storage.types import utcnow

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
MAX_URL_LENGTH = 2048
_OUTBOX: Table = WebhookOutbox.__table__  # type: ignore[assignment]
#: 9 values a row: well under SQLite's 32,766 bound parameters per statement
_ROWS_PER_INSERT = 1000


def new_event_id() -> str:
    """``evt_`` + 12 hex digits of milliseconds + 16 random hex digits: unique, roughly time-ordered."""
    return f"evt_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def sign(secret: str, timestamp: int, body: str) -> str:
    """The ``NexMDM-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def check_url(url: str) -> str:
    url = (url or "").strip()
    if len(url) > MAX_URL_LENGTH or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise InvalidArgument("the URL must be at most 2048 printable characters without spaces", field="url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port out of range
        host = parts.hostname
    except ValueError:  # an unbalanced [ for IPv6, a port that is not a number...
        raise InvalidArgument("the URL is not valid (host or port)", field="url") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidArgument("the URL must be http:// or https:// with a host", field="url")
    if parts.username or parts.password:
        raise InvalidArgument("the URL must not carry credentials; the signature authenticates NexMDM", field="url")
    return url


def check_events(events: list[str] | tuple[str, ...]) -> list[str]:
    wanted = sorted({e.strip() for e in events if e and e.strip()})
    unknown = [e for e in wanted if e not in EVENT_TYPES]
    if not wanted or unknown:
        raise InvalidArgument(
            f"events must be a non-empty list of {', '.join(EVENT_TYPES)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
            field="events",
        )
    return wanted


def check_secret(secret: str) -> str:
    secret = secret.strip()
    if not 32 <= len(secret) <= 128 or not secret.isascii() or not secret.isprintable() or " " in secret:
        raise InvalidArgument("a webhook secret is 32-128 printable ASCII characters without spaces", field="secret")
    return secret


def endpoint_dict(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {"id": endpoint.id, "url": endpoint.url, "events": list(endpoint.events), "created_at": endpoint.created_at}


def add_endpoint(
    db: Session, *, url: str, events: list[str], secret: str | None = None, actor: Actor | None = None
) -> tuple[str, dict[str, Any]]:
    """Register a receiver; returns ``(secret, endpoint)``. Without ``secret`` one is made (32 random bytes)."""
    url = check_url(url)
    events = check_events(events)
    secret = check_secret(secret) if secret is not None else SECRET_PREFIX + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint(
        id=f"whk_{secrets.token_hex(6)}", url=url, events=events, secret=secret, created_at=utcnow()
    )
    db.add(endpoint)
    db.flush()
    record(db, actor, "webhook.create", endpoint.id, url=url, events=events)
    return secret, endpoint_dict(endpoint)


def get_endpoint(db: Session, endpoint_id: str) -> WebhookEndpoint:
    endpoint = db.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}")
    return endpoint


def list_endpoints(db: Session) -> list[dict[str, Any]]:
    rows = db.execute(select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)).scalars()
    return [endpoint_dict(e) for e in rows]


def remove_endpoint(db: Session, endpoint_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
    """Remove a receiver and its undelivered events (its delivery history goes with it)."""
    endpoint = get_endpoint(db, endpoint_id)
    data = endpoint_dict(endpoint)
    db.execute(delete(_OUTBOX).where(_OUTBOX.c.endpoint_id == endpoint_id))
    db.delete(endpoint)
    db.flush()
    record(db, actor, "webhook.remove", endpoint_id, url=data["url"])
    return data


def _body(event_id: str, event_type: str, created_at: datetime, data: dict[str, Any]) -> str:
    document = {"id": event_id, "type": event_type, "created_at": created_at.isoformat(), "data": data}
    return json.dumps(document, separators=(",", ":"), sort_keys=True, default=str)


def subscribers(db: Session, event_type: str) -> list[str]:
    """The endpoints subscribed to ``event_type`` (the table is small: a few receivers)."""
    return [
        endpoint_id
        for endpoint_id, events in db.execute(select(WebhookEndpoint.id, WebhookEndpoint.events))
        if event_type in (events or [])
    ]


def emit(
    db: Session,
    event_type: str,
    data: dict[str, Any],
    *,
    device_id: str | None = None,
    endpoints: list[str] | None = None,
) -> str | None:
    """Queue ``event_type`` for every endpoint subscribed to it, in the caller's transaction.

    Returns the event id, or None when nobody subscribed. ``data`` never carries a command payload or a
    secret. Events about one device are delivered in order per endpoint (``order_key``). A caller that
    emits many events of one type passes ``endpoints`` (from :func:`subscribers`) once.
    """
    if endpoints is None:
        endpoints = subscribers(db, event_type)
    if not endpoints:
        return None
    return _queue(db, endpoints, event_type, data, device_id=device_id)


def _queue(db: Session, endpoints: list[str], event_type: str, data: dict[str, Any], *, device_id: str | None) -> str:
    return emit_many(db, event_type, [(data, device_id)], endpoints=endpoints)[0]


def emit_many(
    db: Session, event_type: str, events: list[tuple[dict[str, Any], str | None]], *, endpoints: list[str]
) -> list[str]:
    """Queue many events of one type (``(data, device_id)`` each) in one multi-row INSERT; returns their ids."""
    now = utcnow()
    ids = [new_event_id() for _ in events]
    rows = [
        {
            "event_id": event_id,
            "endpoint_id": endpoint_id,
            "event_type": event_type,
            "order_key": device_id or "",
            "body": _body(event_id, event_type, now, data),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for event_id, (data, device_id) in zip(ids, events, strict=True)
        for endpoint_id in endpoints
    ]
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        db.execute(insert(_OUTBOX).values(rows[start : start + _ROWS_PER_INSERT]))
    return ids


def send_test(db: Session, endpoint_id: str, *, actor: Actor | None = None) -> str:
    """Queue a ``webhook.test`` event for one endpoint; returns its event id."""
    get_endpoint(db, endpoint_id)
    event_id = _queue(db, [endpoint_id], TEST_EVENT, {"endpoint_id": endpoint_id}, device_id=None)
    record(db, actor, "webhook.test", endpoint_id, event_id=event_id)
    return event_id


def delivery_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.event_id,
        "endpoint_id": row.endpoint_id,
        "event_type": row.event_type,
        "device_id": row.order_key or None,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at if row.status == "pending" else None,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
    }


def list_deliveries(
    db: Session,
    *,
    endpoint_id: str | None = None,
    failed: bool = False,
    before_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Deliveries newest first; ``failed``: dead letters and pending ones that have failed at least once."""
    query = select(_OUTBOX).order_by(_OUTBOX.c.id.desc()).limit(limit)
    if endpoint_id is not None:
        get_endpoint(db, endpoint_id)
        query = query.where(_OUTBOX.c.endpoint_id == endpoint_id)
    if failed:
        query = query.where((_OUTBOX.c.status == "dead") | ((_OUTBOX.c.status == "pending") & (_OUTBOX.c.attempts > 0)))
    if before_id is not None:
        query = query.where(_OUTBOX.c.id < before_id)
    return [delivery_dict(row) for row in db.execute(query)]


def redeliver(db: Session, delivery_id: int, *, actor: Actor | None = None) -> dict[str, Any]:
    """Send a delivery again from scratch: same event id and body, attempts reset, due now."""
    row = db.execute(
        update(_OUTBOX)
        .where(_OUTBOX.c.id == delivery_id)
        .values(status="pending", attempts=0, next_attempt_at=utcnow(), lease_until=None, finished_at=None)
        .returning(_OUTBOX)
    ).first()
    if row is None:
        raise NotFound(f"no webhook delivery {delivery_id}")
    record(db, actor, "webhook.redeliver", str(delivery_id), event_id=row.event_id)
    return delivery_dict(row)


def outbox_stats(db: Session, now: datetime | None = None) -> dict[str, int]:
    """For metrics: deliveries waiting in the outbox, and those that went dead in the last hour (whichever
    process sent them: an API process or a ``nexmdm worker``). Both read the ``(status, next_attempt_at)``
    index: pending rows are few while receivers answer, dead ones fewer. One statement, so one snapshot: two
    (read committed) counted a delivery that went dead between them as pending and as dead."""
    now = now or utcnow()
    o = _OUTBOX.c
    recently_dead = and_(o.status == "dead", o.finished_at >= now - timedelta(hours=1))
    pending, dead = db.execute(
        select(
            func.count().filter(o.status == "pending"),
            func.count().filter(recently_dead),
        ).where(or_(o.status == "pending", recently_dead))
    ).one()
    return {"pending": int(pending or 0), "dead_last_hour": int(dead or 0)}
