"""Enrolling a device (a new one, a retry after a lost answer, a token rotation, a new generation) and revoking it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.base import security, validation
from core.base.errors import Conflict
from core.base.versions import version_key
from core.campaigns.counts import unreleased_any
from core.commands.lifecycle import finish_pending
from core.devices.labels import set_initial_labels
from core.devices.records import SUMMARY_FIELDS, get_device
from core.enrollment import tokens as credentials
from core.events.audit import Actor, record
from core.events.webhooks import emit
from core.models import CampaignTarget, Device, FcmDispatch
from core.profiles import holds
from core.storage.dialect import is_postgresql
from core.storage.types import utcnow

#: a retry with the same enrollment token and device within this window re-issues a token for free
ENROLL_RETRY_WINDOW = timedelta(minutes=10)


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
    db.execute(finish_pending(FcmDispatch.device_id == device_id, status="cancelled", now=now))
    # and its targets in waves of campaigns not released yet
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
    validation.device_id(device_id)
    validation.text(fcm_token, "fcm_token", max_length=4096)
    validation.text(model, "model", max_length=128)
    validation.text(os_version, "os_version", max_length=64)
    validation.text(agent_version, "agent_version", max_length=64)
    token = credentials.find_enrollment_token(db, enrollment_secret)
    now = utcnow()
    device = db.get(Device, device_id, with_for_update=is_postgresql(db))

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
            fields |= dict.fromkeys(SUMMARY_FIELDS) | {"generation": device.generation + 1}
            holds.forget_device(db, device_id)  # and no profile rollout holds it any more
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
