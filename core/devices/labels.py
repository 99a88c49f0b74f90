"""Device labels: validation, setting and removing them (one device or in bulk by selector), counts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, insert, literal, select, true, update
from sqlalchemy.orm import Session

from core.base.errors import Conflict, InvalidArgument, NotFound
from core.base.labels import MAX_LABELS as MAX_LABELS  # the label syntax, re-exported (defined in core.base)
from core.base.labels import label_key as label_key
from core.base.labels import label_value as label_value
from core.base.labels import parse_label_args as parse_label_args
from core.base.labels import validate_labels as validate_labels
from core.devices.listing import attach_labels as attach_labels  # re-exported: defined with the fleet view
from core.events.audit import Actor, record
from core.models import Device, DeviceLabel
from core.storage.dialect import insert_for


def device_labels(db: Session, device_id: str) -> dict[str, str]:
    rows = db.execute(select(DeviceLabel.key, DeviceLabel.value).where(DeviceLabel.device_id == device_id))
    return dict(sorted((key, value) for key, value in rows))


def _upsert(db: Session, source: Any, key: str, value: str) -> None:
    """Set ``key=value`` on every device that ``source`` (a SELECT of device ids) yields, in one statement."""
    stmt = insert_for(db, DeviceLabel).from_select(
        ["device_id", "key", "value"],
        select(source.c.id, literal(key), literal(value)).select_from(source).where(true()),
    )
    # the WHERE above lets SQLite tell the ON CONFLICT clause from a join's ON
    stmt = stmt.on_conflict_do_update(index_elements=["device_id", "key"], set_={"value": stmt.excluded.value})
    db.execute(stmt)


def _check_limit(db: Session, device_ids: Any) -> None:
    over = db.execute(
        select(DeviceLabel.device_id)
        .where(DeviceLabel.device_id.in_(device_ids))
        .group_by(DeviceLabel.device_id)
        .having(func.count() > MAX_LABELS)
        .limit(1)
    ).scalar_one_or_none()
    if over is not None:
        raise InvalidArgument(f"device {over!r} would carry more than {MAX_LABELS} labels", field="labels")


def apply_labels(db: Session, device_ids: Select[Any], to_set: Mapping[str, str], remove: Iterable[str]) -> None:
    """Set and remove labels on the devices ``device_ids`` selects (a SELECT of ids); set-based."""
    to_set = validate_labels(to_set)
    remove = [label_key(k) for k in remove]
    if remove:
        db.execute(
            delete(DeviceLabel)
            .where(DeviceLabel.device_id.in_(device_ids), DeviceLabel.key.in_(remove))
            .execution_options(synchronize_session=False)
        )
    source = device_ids.subquery()
    for key, value in to_set.items():
        _upsert(db, source, key, value)
    if to_set:
        _check_limit(db, device_ids)
    if to_set or remove:  # their matched profiles are recomputed lazily (core.profiles.effective)
        db.execute(
            update(Device)
            .where(Device.id.in_(device_ids), ~Device.profile_stale)
            .values(profile_stale=True)
            .execution_options(synchronize_session=False)
        )


def label_selected(
    db: Session,
    device_ids: Select[Any],
    to_set: Mapping[str, str],
    remove: Iterable[str],
    *,
    selector: str,
    actor: Actor | None = None,
) -> int:
    """Set and remove labels on every device ``device_ids`` selects; one audit row (selector and count).

    Returns how many devices matched."""
    matched = int(db.execute(select(func.count()).select_from(device_ids.subquery())).scalar_one())
    apply_labels(db, device_ids, to_set, remove)
    record(db, actor, "device.label", None, selector=selector, matched=matched, set=dict(to_set), remove=list(remove))
    return matched


def label_device(
    db: Session, device_id: str, to_set: Mapping[str, str], remove: Iterable[str], *, actor: Actor | None = None
) -> dict[str, str]:
    """Set and remove labels of one device; returns its labels after the change."""
    device = db.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    if device.revoked_at is not None:
        raise Conflict(f"device {device_id!r} is revoked")
    apply_labels(db, select(Device.id).where(Device.id == device_id), to_set, remove)
    record(db, actor, "device.label", device_id, set=dict(to_set), remove=list(remove))
    return device_labels(db, device_id)


def set_initial_labels(db: Session, device_id: str, labels: Mapping[str, str] | None) -> None:
    """A new enrollment starts with exactly its token's labels."""
    db.execute(delete(DeviceLabel).where(DeviceLabel.device_id == device_id))
    if labels:
        db.execute(insert(DeviceLabel), [{"device_id": device_id, "key": k, "value": v} for k, v in labels.items()])


def label_counts(
    db: Session, *, key: str | None = None, within: ColumnElement[bool] | None = None
) -> list[dict[str, Any]]:
    """Devices (not revoked) per label key and value; ``within``: a condition on ``devices`` (a scope's)."""
    query = (
        select(DeviceLabel.key, DeviceLabel.value, func.count().label("devices"))
        .join(Device, Device.id == DeviceLabel.device_id)
        .where(Device.revoked_at.is_(None), within if within is not None else true())
        .group_by(DeviceLabel.key, DeviceLabel.value)
        .order_by(DeviceLabel.key, DeviceLabel.value)
    )
    if key is not None:
        query = query.where(DeviceLabel.key == label_key(key))
    return [dict(row) for row in db.execute(query).mappings()]
