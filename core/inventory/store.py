"""Storing a device's inventory report: a full replace (``PUT``) or a delta on a base hash (``PATCH``).

Each report is one transaction of the caller's: the device's ``device_inventory`` row is locked first
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serializes writers), so
two reports of one device never interleave and the later one wins whole. Under the lock the held apps
are compared with the reported ones: only the rows that differ are written, and every install, version
change and removal becomes a ``device_app_changes`` row in the same transaction. The same hash again
writes nothing. Log lines carry the device id and counts only, never an inventory value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from core.base.errors import Conflict, InvalidArgument
from core.base.settings import Settings
from core.inventory.document import DEVICE_FIELDS, MAX_APPS, Delta, HashMismatch, Report, canonical_hash
from core.models import Device, DeviceApp, DeviceAppChange, DeviceInventory
from core.storage.dialect import insert_for, is_postgresql
from core.storage.operations import log_operation
from core.storage.types import utcnow

_APP_COLUMNS = ("version_code", "version_name", "installer", "system", "enabled", "signing_sha256")
_DEVICE_COLUMNS = tuple(DEVICE_FIELDS)
_APPS: Table = DeviceApp.__table__  # type: ignore[assignment]
_CHANGES: Table = DeviceAppChange.__table__  # type: ignore[assignment]
_INVENTORY: Table = DeviceInventory.__table__  # type: ignore[assignment]


class BaseMismatch(Conflict):
    """A ``PATCH`` whose ``base_hash`` is not the inventory the server holds (409; nothing written)."""

    code = "inventory_base_mismatch"


@dataclass(frozen=True)
class Stored:
    """What a report did: its hash, whether anything changed, and the app changes it recorded."""

    hash: str
    changed: bool
    app_changes: int

    def as_dict(self) -> dict[str, Any]:
        return {"hash": self.hash, "changed": self.changed, "app_changes": self.app_changes}


def _lock(db: Session, device_id: str, first: dict[str, Any] | None = None) -> tuple[Any, bool]:
    """The device's inventory row, locked for this transaction (``None``: never reported), and whether
    ``first`` (the row of a first report) was inserted here: that takes and holds the row in one
    statement. Without ``first`` (a delta needs an existing row) nothing is inserted."""
    query = select(_INVENTORY).where(_INVENTORY.c.device_id == device_id)
    if not is_postgresql(db):
        return db.execute(query).first(), False  # BEGIN IMMEDIATE: this transaction is the only writer
    row = db.execute(query.with_for_update()).first()
    if row is not None or first is None:
        return row, False
    # a concurrent first report waits on this insert (then finds the row, reported), or inserted first
    # and this one waits below for it to commit
    statement = insert_for(db, _INVENTORY).values(device_id=device_id, **first).on_conflict_do_nothing()
    if db.execute(statement.returning(_INVENTORY.c.device_id)).first() is not None:
        return None, True
    return db.execute(query.with_for_update()).first(), False


def _row(
    new_hash: str, device: dict[str, Any], app_count: int, settings: Settings, *, serial_withheld: bool
) -> dict[str, Any]:
    """The ``device_inventory`` row of a report (the serial only when kept)."""
    now = utcnow()
    fields: dict[str, Any] = {name: device.get(name) for name in _DEVICE_COLUMNS}
    if fields["security_patch"] is not None:
        fields["security_patch"] = date.fromisoformat(fields["security_patch"])
    if not settings.inventory_serial:
        fields["serial"] = None
    return {
        **fields,
        "hash": new_hash,
        "app_count": app_count,
        "serial_withheld": serial_withheld,
        "reported_at": now,
        "updated_at": now,
    }


def _held_apps(db: Session, device_id: str) -> dict[str, dict[str, Any]]:
    rows = db.execute(select(_APPS).where(_APPS.c.device_id == device_id)).mappings()
    return {row["package"]: {k: v for k, v in row.items() if k != "device_id" and v is not None} for row in rows}


def held_device(row: Any) -> dict[str, Any]:
    """The device part of the held document, as the device sent it (``serial`` only when kept)."""
    out: dict[str, Any] = {}
    for name in _DEVICE_COLUMNS:
        value = getattr(row, name)
        if value is not None:
            out[name] = value.isoformat() if isinstance(value, date) else value
    return out


def _change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> str | None:
    if old is None:
        return "installed"
    if new is None:
        return "removed"
    if new["version_code"] > old["version_code"]:
        return "updated"
    if new["version_code"] < old["version_code"]:
        return "downgraded"
    return None


def _write(
    db: Session,
    device_id: str,
    held: Any,
    new_hash: str,
    device: dict[str, Any],
    apps: dict[str, dict[str, Any]],
    settings: Settings,
    *,
    serial_withheld: bool,
    inserted: bool = False,
    old_apps: dict[str, dict[str, Any]] | None = None,
) -> Stored:
    """Write a new inventory over the held one (``inserted``: its row was written by ``_lock``;
    ``old_apps``: the held apps, when the caller has read them under the lock)."""
    started = time.perf_counter()
    values = _row(new_hash, device, len(apps), settings, serial_withheld=serial_withheld)
    now = values["updated_at"]
    if old_apps is None:
        old_apps = _held_apps(db, device_id) if held is not None else {}
    changes: list[dict[str, Any]] = []
    upserts: list[dict[str, Any]] = []
    for package, app in apps.items():
        old = old_apps.get(package)
        if old != app:
            upserts.append({"device_id": device_id, **{c: app.get(c) for c in _APP_COLUMNS}, "package": package})
        kind = _change(old, app)
        if kind is not None:
            changes.append(
                {
                    "device_id": device_id,
                    "package": package,
                    "change": kind,
                    "from_version_code": None if old is None else old["version_code"],
                    "to_version_code": app["version_code"],
                    "at": now,
                }
            )
    removed = sorted(set(old_apps) - set(apps))
    for package in removed:
        changes.append(
            {
                "device_id": device_id,
                "package": package,
                "change": "removed",
                "from_version_code": old_apps[package]["version_code"],
                "to_version_code": None,
                "at": now,
            }
        )
    if is_postgresql(db):
        _apply_postgresql(db, device_id, values, upserts, changes, removed, held=held is not None)
    else:
        _apply(db, device_id, values, held, upserts, changes, removed, inserted=inserted)
    log_operation(
        "update",
        "device_inventory",
        {"device_id": device_id, "apps": len(apps), "app_changes": len(changes)},
        started,
    )
    return Stored(new_hash, True, len(changes))


def _apply(
    db: Session,
    device_id: str,
    values: dict[str, Any],
    held: Any,
    upserts: list[dict[str, Any]],
    changes: list[dict[str, Any]],
    removed: list[str],
    *,
    inserted: bool,
) -> None:
    """The writes of a report on SQLite (a statement costs no round trip there): one statement per kind."""
    now = values["updated_at"]
    if removed:
        db.execute(delete(_APPS).where(_APPS.c.device_id == device_id, _APPS.c.package.in_(removed)))
    if upserts:
        statement = insert_for(db, _APPS)
        statement = statement.on_conflict_do_update(
            index_elements=["device_id", "package"], set_={c: statement.excluded[c] for c in _APP_COLUMNS}
        )
        db.execute(statement, upserts)
    if changes:
        db.execute(insert(_CHANGES), changes)
    if held is not None:
        db.execute(update(_INVENTORY).where(_INVENTORY.c.device_id == device_id).values(**values))
    elif not inserted:  # SQLite's first report (PostgreSQL's was inserted by ``_lock``)
        db.execute(insert(_INVENTORY).values(device_id=device_id, **values))
    # profile_stale: the device's matched profiles are recomputed lazily (core.profiles.effective)
    db.execute(
        update(Device)
        .where(Device.id == device_id)
        .values(inventory_hash=values["hash"], inventory_seen_at=now, profile_stale=True)
    )


_APP_TYPES = {"version_code": "bigint", "version_name": "text", "installer": "text", "system": "boolean"}
_APP_TYPES |= {"enabled": "boolean", "signing_sha256": "text"}
_INVENTORY_SET = ", ".join(f"{c} = %(i_{c})s" for c in (*_DEVICE_COLUMNS, "hash", "app_count", "serial_withheld"))

#: every write of a report in one statement (one round trip, whatever the number of apps): the removed
#: apps deleted, the changed ones upserted from arrays (sorted by package: concurrent writers lock rows in
#: one order), the change rows inserted in their order, the inventory row (when held) and the device's hash
#: moved; profile_stale: the device's matched profiles are recomputed lazily (core.profiles.effective)
_WRITE_PG = f"""
WITH gone AS (
    DELETE FROM device_apps WHERE device_id = %(device_id)s AND package = ANY(%(removed)s::text[])
), apps AS (
    INSERT INTO device_apps (device_id, package, {", ".join(_APP_TYPES)})
    SELECT %(device_id)s, a.* FROM unnest(%(a_package)s::text[],
        {", ".join(f"%(a_{c})s::{t}[]" for c, t in _APP_TYPES.items())}) AS a(package, {", ".join(_APP_TYPES)})
    ORDER BY a.package
    ON CONFLICT (device_id, package) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in _APP_TYPES)}
), changes AS (
    INSERT INTO device_app_changes (device_id, package, change, from_version_code, to_version_code, at)
    SELECT %(device_id)s, c.package, c.change, c.from_code, c.to_code, %(at)s
    FROM unnest(%(c_package)s::text[], %(c_change)s::text[], %(c_from)s::bigint[], %(c_to)s::bigint[])
        WITH ORDINALITY AS c(package, change, from_code, to_code, n)
    ORDER BY c.n
), inventory AS (
    UPDATE device_inventory SET {_INVENTORY_SET}, reported_at = %(at)s, updated_at = %(at)s
    WHERE device_id = %(device_id)s AND %(held)s
)
UPDATE devices SET inventory_hash = %(i_hash)s, inventory_seen_at = %(at)s, profile_stale = true
WHERE id = %(device_id)s
"""


def _apply_postgresql(
    db: Session,
    device_id: str,
    values: dict[str, Any],
    upserts: list[dict[str, Any]],
    changes: list[dict[str, Any]],
    removed: list[str],
    *,
    held: bool,
) -> None:
    """The writes of a report on PostgreSQL in one statement (``values``: the inventory row's new values,
    written when ``held``: a first report's row was inserted by ``_lock``)."""
    params: dict[str, Any] = {"device_id": device_id, "removed": removed, "held": held}
    params["a_package"] = [u["package"] for u in upserts]
    params |= {f"a_{c}": [u[c] for u in upserts] for c in _APP_TYPES}
    params |= {"c_package": [c["package"] for c in changes], "c_change": [c["change"] for c in changes]}
    params |= {"c_from": [c["from_version_code"] for c in changes], "c_to": [c["to_version_code"] for c in changes]}
    params |= {f"i_{c}": values[c] for c in (*_DEVICE_COLUMNS, "hash", "app_count", "serial_withheld")}
    params["at"] = values["updated_at"]
    db.connection().exec_driver_sql(_WRITE_PG, params)


def _unchanged(db: Session, device_id: str, held_hash: str) -> Stored:
    """The held inventory again: nothing is written, unless the device's row forgot the hash (a new
    generation of a re-enrolled device is asked again and may send the same inventory)."""
    started = time.perf_counter()
    db.execute(
        update(Device)
        .where(Device.id == device_id, Device.inventory_hash.is_distinct_from(held_hash))
        .values(inventory_hash=held_hash, inventory_seen_at=utcnow())
    )
    log_operation("dedup_hit", "device_inventory", {"device_id": device_id}, started)
    return Stored(held_hash, False, 0)


def put_inventory(db: Session, device_id: str, report: Report, settings: Settings) -> Stored:
    """Replace the device's inventory with ``report`` (checked, hash verified); the caller commits."""
    withheld = "serial" in report.device and not settings.inventory_serial
    first = _row(report.hash, report.device, len(report.apps), settings, serial_withheld=withheld)
    held, inserted = _lock(db, device_id, first)
    if held is not None and held.hash == report.hash:
        return _unchanged(db, device_id, held.hash)
    return _write(
        db,
        device_id,
        held,
        report.hash,
        report.device,
        report.apps,
        settings,
        serial_withheld=withheld,
        inserted=inserted,
    )


def patch_inventory(db: Session, device_id: str, delta: Delta, settings: Settings) -> Stored:
    """Apply a delta to the held inventory: ``BaseMismatch`` when ``base_hash`` is not what is held.

    The result's hash is verified (``HashMismatch``) unless the held document lacks the serial the
    device reported (not kept: ``NEXMDM_INVENTORY_SERIAL`` is off), which the server cannot rebuild;
    then the base hash alone chains the reports.
    """
    held, _ = _lock(db, device_id)
    if held is None or held.hash != delta.base_hash:
        raise BaseMismatch("base_hash is not the inventory the server holds: send the whole inventory (PUT)")
    if delta.hash == held.hash and not delta.device and not delta.cleared and not delta.upsert and not delta.remove:
        return _unchanged(db, device_id, held.hash)
    device = held_device(held)
    device.update(delta.device)
    for name in delta.cleared:
        device.pop(name, None)
    held_apps = _held_apps(db, device_id)
    apps = dict(held_apps)
    apps.update(delta.upsert)
    for package in delta.remove:
        apps.pop(package, None)
    if len(apps) > MAX_APPS:
        raise InvalidArgument(f"the inventory would hold more than {MAX_APPS} apps", field="apps.upsert")
    withheld = bool(held.serial_withheld) and "serial" not in delta.device and "serial" not in delta.cleared
    if "serial" in delta.device and not settings.inventory_serial:
        withheld = True
    if not withheld and canonical_hash(device, apps) != delta.hash:
        raise HashMismatch("hash is not the SHA-256 of the inventory after this delta", field="hash")
    if delta.hash == held.hash:
        return _unchanged(db, device_id, held.hash)
    return _write(db, device_id, held, delta.hash, device, apps, settings, serial_withheld=withheld, old_apps=held_apps)
