"""Devices: enrollment, device tokens, the last-seen summary and the fleet view."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import credentials, security, validation
from core.device_list import device_dict as device_dict  # the fleet view, re-exported (one definition there)
from core.device_list import device_state as device_state
from core.device_list import list_devices as list_devices
from core.errors import Conflict, InvalidCredentials, NotFound
from core.events.audit import Actor, record
from core.events.webhooks import emit
from core.models import Device, DeviceHeartbeat, FcmDispatch
from core.types import utcnow

#: a retry with the same enrollment token and device within this window re-issues a token for free
ENROLL_RETRY_WINDOW = timedelta(minutes=10)


def get_device(db: Session, device_id: str) -> Device:
    device = db.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    return device


def revoke_device(db: Session, device_id: str, *, actor: Actor | None = None) -> Device:
    """Revoke a device, in the caller's transaction.

    Its token and its enrollment retry stop working at once, and its pending commands are cancelled (a
    late ack is 409, they leave its pending list and are never pushed), and so are its targets in campaign
    waves not released yet. It may enroll again, as a new
    generation that sees nothing of this one. The one place revocation is defined: the CLI and the API
    both call it (``POST /v1/devices/{id}/revoke``, ``devices revoke``), with the actor for the audit row.
    Revoking a revoked device changes nothing more.
    """
    device = get_device(db, device_id)
    now = utcnow()
    changed = device.revoked_at is None
    if changed:
        device.revoked_at = now
    device.device_token_hash = None
    device.enrollment_secret_hash = None
    db.flush()
    from core.dispatches import finished_fcm_status  # core.dispatches imports this module

    db.execute(
        update(FcmDispatch)
        .where(FcmDispatch.device_id == device_id, FcmDispatch.status == "pending")
        .values(status="cancelled", finished_at=now, lease_until=None, fcm_status=finished_fcm_status(now))
        .execution_options(synchronize_session=False)
    )
    # and its targets in waves of campaigns not released yet (core.fleet: imported here, it imports us)
    from core.fleet.counts import unreleased_any
    from core.models import CampaignTarget

    db.execute(
        update(CampaignTarget)
        .where(CampaignTarget.device_id == device_id, unreleased_any())
        .values(state="cancelled")
        .execution_options(synchronize_session=False)
    )
    if changed:
        record(db, actor, "device.revoke", device_id)
        emit(
            db,
            "device.revoked",
            {"device_id": device_id, "revoked_at": now.isoformat()},
            device_id=device_id,
        )
    return device


def authenticate_device(db: Session, secret: str) -> Device:
    device = db.execute(
        select(Device).where(Device.device_token_hash == security.hash_secret(secret))
    ).scalar_one_or_none()
    if device is None or device.revoked_at is not None or not security.matches(secret, device.device_token_hash):
        raise InvalidCredentials("invalid device token")
    return device


def enroll_device(
    db: Session,
    *,
    enrollment_secret: str,
    device_id: str,
    fcm_token: str | None = None,
    model: str | None = None,
    os_version: str | None = None,
    agent_version: str | None = None,
    current_device_token: str | None = None,
    retry_secret: str | None = None,
) -> dict[str, Any]:
    """Enroll (or re-enroll) a device; returns ``{"device_id", "device_token", "enrollment_secret", "created",
    "generation"}``. Both secrets are shown once; only their hashes are stored.

    * a new device takes one use of the token, atomically;
    * a retry after a lost answer (same unexpired token and device, within 10 minutes of enrolling, before
      the device's first heartbeat) issues a fresh device token without taking another use, but only when
      it presents the ``enrollment_secret`` of the answer it lost (``retry_secret``): without it a holder of
      a shared enrollment token could take the device over. Each secret works once;
    * an enrolled, unrevoked device is a ``Conflict`` unless ``current_device_token`` is its token, in
      which case its token rotates (taking a use);
    * a revoked device enrolls again like a new one, as its next generation: no command, ack, push or
      FCM token of the old generation follows it.
    """
    from core.fleet.labels import set_initial_labels  # core.fleet imports this module
    from core.fleet.versions import version_key

    validation.device_id(device_id)
    validation.text(fcm_token, "fcm_token", max_length=4096)
    validation.text(model, "model", max_length=128)
    validation.text(os_version, "os_version", max_length=64)
    validation.text(agent_version, "agent_version", max_length=64)
    token = credentials.find_enrollment_token(db, enrollment_secret)
    now = utcnow()
    device = db.get(Device, device_id, with_for_update=db.get_bind().dialect.name == "postgresql")

    # A lost answer means the device never got its token, so it never sent a heartbeat with it: once it
    # has, a "retry" would let any holder of a shared enrollment token take the device over. Before that,
    # only the device that received the first answer's one-time secret can retry.
    retry = (
        device is not None
        and device.revoked_at is None
        and device.enrollment_token_id == token.id
        and device.enrolled_at > now - ENROLL_RETRY_WINDOW
        and device.last_seen_at is None
        and credentials.token_state(token, now) in ("active", "exhausted")
        and retry_secret is not None
        and security.matches(retry_secret, device.enrollment_secret_hash)
    )
    owns_it = (
        current_device_token is not None
        and device is not None
        and security.matches(current_device_token, device.device_token_hash)
    )
    if device is not None and device.revoked_at is None and not retry and not owns_it:
        raise Conflict(f"device {device_id!r} is already enrolled; revoke it first or send its current device token")
    if not retry:
        credentials.consume_enrollment_use(db, token)
    # a new device, or a revoked id enrolling again, starts with exactly its token's labels
    fresh = device is None or device.revoked_at is not None

    secret = security.new_secret(security.DEVICE_PREFIX)
    one_time = security.new_secret(security.ENROLLMENT_SECRET_PREFIX)
    fields: dict[str, Any] = {
        "device_token_hash": security.hash_secret(secret),
        "enrollment_secret_hash": security.hash_secret(one_time),
        "enrollment_token_id": token.id,
        "token_issued_at": now,
        "revoked_at": None,
        "model": model,
        "os_version": os_version,
        "agent_version": agent_version,
        "agent_version_key": version_key(agent_version),
    }
    if fcm_token:
        fields |= {"fcm_token": fcm_token, "fcm_token_dead_at": None}
    created = device is None
    reenrolled = device is not None and device.revoked_at is not None
    if device is None:
        device = Device(id=device_id, enrolled_at=now, generation=1, **fields)
        db.add(device)
        try:
            with db.begin_nested():
                db.flush()
        except IntegrityError:
            raise Conflict(f"device {device_id!r} is being enrolled by another request") from None
    else:
        if device.revoked_at is not None:
            # a new generation: nothing the old one reported or was reachable at carries over
            fields |= dict.fromkeys(_SUMMARY) | {"generation": device.generation + 1}
            if not fcm_token:
                fields |= {"fcm_token": None, "fcm_token_dead_at": None}
        if device.revoked_at is not None or not retry:
            fields["enrolled_at"] = now
        for name, value in fields.items():
            setattr(device, name, value)
        db.flush()
    if fresh:
        set_initial_labels(db, device_id, token.labels)
    if created or reenrolled:  # a new enrollment, not a retry or a token rotation
        data = {"device_id": device_id, "model": model, "os_version": os_version, "agent_version": agent_version}
        emit(db, "device.enrolled", data | {"enrolled_at": now.isoformat()}, device_id=device_id)
    return {
        "device_id": device_id,
        "device_token": secret,
        "enrollment_secret": one_time,
        "created": created,
        "generation": device.generation,
    }


#: the last-seen summary that heartbeats keep; a new generation starts without it
_SUMMARY = ("last_seen_at", "last_status", "last_battery_pct", "last_plugged", "last_network_type")


def recent_heartbeats(
    db: Session,
    device_id: str,
    *,
    since: datetime | None = None,
    limit: int = 50,
    before: datetime | None = None,
) -> list[dict[str, Any]]:
    """A device's heartbeats, newest first (keyset: ``before`` is the last bucket of the previous page)."""
    table = DeviceHeartbeat.__table__
    query = select(table).where(table.c.device_id == device_id)
    if since is not None:
        query = query.where(table.c.bucket_start >= since)
    if before is not None:
        query = query.where(table.c.bucket_start < before)
    query = query.order_by(table.c.bucket_start.desc()).limit(limit)
    return [dict(row) for row in db.execute(query).mappings()]


def device_activity(db: Session, device_id: str) -> dict[str, int]:
    """How many heartbeats a device has stored and how many of its commands are still pending."""
    heartbeats = db.scalar(
        select(func.count()).select_from(DeviceHeartbeat).where(DeviceHeartbeat.device_id == device_id)
    )
    pending = db.scalar(
        select(func.count())
        .select_from(FcmDispatch)
        .join(Device, Device.id == FcmDispatch.device_id)
        .where(
            FcmDispatch.device_id == device_id,
            FcmDispatch.status == "pending",
            FcmDispatch.generation == Device.generation,
        )
    )
    return {"heartbeats_stored": int(heartbeats or 0), "pending_commands": int(pending or 0)}
