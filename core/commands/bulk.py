"""One command per device of a set, in one statement: what ``create_command`` makes of one request, for
senders that act on many devices at once without an operator asking for each (a profile's remediation,
``core.profiles.remediation``).

Each row is a pending command stamped with its device's enrollment generation, its push left to the
delivery worker (``core.commands.push``), exactly as a single command's. The action and payload are
checked once against the catalogue; a destructive action is refused (it waits for a second admin,
``core.approvals``). The rows come from one ``INSERT ... SELECT ... ON CONFLICT (request_id) DO NOTHING``:
a request id that exists already is skipped and not counted as a replay (nobody asked twice). Every
created command gets its own ``command.create`` audit row, all in one more statement.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from sqlalchemy import Select, literal, null, select
from sqlalchemy.orm import Session

from core.base import validation
from core.base.settings import Settings
from core.commands.catalogue import catalogue_for
from core.commands.destructive import refuse_unapproved
from core.events.audit import Actor, record_each
from core.models import FcmDispatch
from core.models.base import JSONType
from core.storage.dialect import insert_for
from core.storage.operations import log_operation
from core.storage.types import utcnow

_COLUMNS = (
    "request_id",
    "device_id",
    "generation",
    "action",
    "payload",
    "payload_hash",
    "status",
    "fcm_status",
    "replay_count",
    "attempts",
    "created_at",
)


def create_for_devices(
    db: Session,
    settings: Settings,
    *,
    action: str,
    payload: dict[str, Any] | None,
    devices: Select[str, str, int],
    actor: Actor,
    now: datetime | None = None,
) -> list[dict[str, str]]:
    """Create ``action`` with ``payload`` for every row of ``devices``, a SELECT of three columns: the
    command's ``request_id``, the ``device_id`` and the device's enrollment ``generation`` (in that order).

    Returns ``[{"request_id", "device_id"}]`` of the commands created (not those whose id existed)."""
    started = time.perf_counter()
    catalogue_for(settings).check_command(action, payload)
    refuse_unapproved(action, settings)
    digest = validation.payload_hash(payload)
    now = now or utcnow()
    wanted = devices.subquery("wanted")
    request_id, device_id, generation = wanted.c
    source = select(
        request_id,
        device_id,
        generation,
        literal(action),
        null() if payload is None else literal(payload, JSONType),
        literal(digest),
        literal("pending"),
        literal("pending"),
        literal(0),
        literal(0),
        literal(now, FcmDispatch.created_at.type),
    ).where(request_id.is_not(None))  # a WHERE: SQLite's upsert needs one after INSERT ... SELECT
    source = source.order_by(request_id)  # concurrent writers take the keys' locks in one order: no deadlock
    statement = (
        insert_for(db, FcmDispatch)
        .from_select(list(_COLUMNS), source)
        .on_conflict_do_nothing(index_elements=["request_id"])
        .returning(FcmDispatch.request_id, FcmDispatch.device_id)
    )
    created = [{"request_id": r, "device_id": d} for r, d in db.execute(statement).all()]
    details = {"action": action, "payload_hash": digest}
    record_each(
        db, actor, "command.create", [(c["request_id"], {"device_id": c["device_id"], **details}) for c in created]
    )
    if created:
        log_operation("create", "fcm_dispatches", {"action": action, "created": len(created)}, started)
    return created
