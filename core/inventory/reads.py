"""Reading inventories: one device's inventory, apps and app changes, and the fleet's apps by selector.

Listings are keyset pages (the caller asks for one row more than it shows). The fleet reads evaluate a
selector (``core.devices.selectors``) under ``NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS`` like every other
selector read.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, text
from sqlalchemy.orm import Session

from core.base.errors import NotFound
from core.base.settings import Settings
from core.devices import scopes, selectors
from core.devices.records import get_device
from core.inventory.store import held_device
from core.models import Device, DeviceApp, DeviceAppChange, DeviceInventory
from core.storage.timeouts import selector_reads

_APPS = DeviceApp.__table__
_CHANGES = DeviceAppChange.__table__


def device_inventory(db: Session, device_id: str) -> dict[str, Any]:
    """The device's held inventory (its device fields, app count and times); ``NotFound`` when none."""
    get_device(db, device_id)
    row = db.get(DeviceInventory, device_id)
    if row is None:
        raise NotFound(f"device {device_id!r} has reported no inventory")
    return {
        "device_id": device_id,
        "hash": row.hash,
        "device": held_device(row),
        "app_count": row.app_count,
        "reported_at": row.reported_at,
        "updated_at": row.updated_at,
    }


def device_apps(db: Session, device_id: str, *, limit: int = 100, after: str | None = None) -> list[dict[str, Any]]:
    """The device's apps ordered by package (keyset: ``after`` is the last package of the previous page)."""
    get_device(db, device_id)
    query = select(_APPS).where(_APPS.c.device_id == device_id)
    if after is not None:
        query = query.where(_APPS.c.package > after)
    rows = db.execute(query.order_by(_APPS.c.package).limit(limit)).mappings()
    return [{k: v for k, v in row.items() if k != "device_id"} for row in rows]


def app_changes(db: Session, device_id: str, *, limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
    """The device's app changes, newest first (keyset: ``before`` is the last id of the previous page)."""
    get_device(db, device_id)
    query = select(_CHANGES).where(_CHANGES.c.device_id == device_id)
    if before is not None:
        query = query.where(_CHANGES.c.id < before)
    rows = db.execute(query.order_by(_CHANGES.c.id.desc()).limit(limit)).mappings()
    return [{k: v for k, v in row.items() if k != "device_id"} for row in rows]


def _scope(
    selector: str | None, settings: Settings, scope: str | None = None
) -> tuple[ColumnElement[bool], bool, str | None]:
    """The condition on ``device_apps`` for the selected devices (inside a principal's ``scope``), whether it
    selects the whole fleet, and the selector to read under the time limit of.

    The whole fleet (no selector terms, no scope) is every unrevoked device: rows are kept unless their
    device is one of the (few) revoked ones, a filter an index-only scan of ``device_apps`` applies without
    joining 100,000 devices (a selector is a semi-join with the devices it matches)."""
    parsed = selectors.parse(selector)
    if parsed.is_all and scope is None:
        revoked = select(Device.id).where(Device.revoked_at.is_not(None))
        return _APPS.c.device_id.not_in(revoked), True, None
    chosen: ColumnElement[bool] = _APPS.c.device_id.in_(selectors.matching_ids(parsed, settings))
    if scope is not None:
        chosen = and_(chosen, _APPS.c.device_id.in_(scopes.scoped_ids(scope, settings)))
    return chosen, False, parsed.text


def _limited(db: Session, settings: Settings, selector: str | None) -> Any:
    return selector_reads(db, settings, selector) if selector else nullcontext()


_NEXT_PACKAGES = text(
    """
    WITH RECURSIVE p(package, n) AS (
        SELECT (SELECT min(package) FROM device_apps WHERE package > :after), 1
        UNION ALL
        SELECT (SELECT min(package) FROM device_apps WHERE package > p.package), p.n + 1
        FROM p WHERE p.package IS NOT NULL AND p.n < :limit
    )
    SELECT package FROM p WHERE package IS NOT NULL ORDER BY package
    """
)


def _next_packages(db: Session, after: str | None, limit: int) -> list[str]:
    """The next ``limit`` packages held by any device, by package: one probe of the package index each (a
    loose index scan), not a read of every row."""
    rows = db.execute(_NEXT_PACKAGES, {"after": "" if after is None else after, "limit": limit})
    return [row[0] for row in rows]


def _summaries(db: Session, packages: ColumnElement[bool], chosen: ColumnElement[bool]) -> list[dict[str, Any]]:
    """Per package among ``packages`` held by a chosen device: devices, distinct versions, the most common
    version (the newest of a tie) with its name, and its share."""
    per_version = (
        select(
            _APPS.c.package,
            _APPS.c.version_code,
            func.count().label("n"),
            func.max(_APPS.c.version_name).label("version_name"),
        )
        .where(chosen, packages)
        .group_by(_APPS.c.package, _APPS.c.version_code)
        .subquery()
    )
    ranked = select(
        per_version,
        func.sum(per_version.c.n).over(partition_by=per_version.c.package).label("devices"),
        func.count().over(partition_by=per_version.c.package).label("versions"),
        func.row_number()
        .over(partition_by=per_version.c.package, order_by=(per_version.c.n.desc(), per_version.c.version_code.desc()))
        .label("rank"),
    ).subquery()
    rows = db.execute(select(ranked).where(ranked.c.rank == 1).order_by(ranked.c.package)).mappings()
    return [
        {
            "package": row["package"],
            "devices": int(row["devices"]),
            "versions": int(row["versions"]),
            "top_version_code": row["version_code"],
            "top_version_name": row["version_name"],
            "top_share": round(int(row["n"]) / int(row["devices"]), 4),
        }
        for row in rows
    ]


def fleet_apps(
    db: Session,
    settings: Settings,
    *,
    selector: str | None = None,
    scope: str | None = None,
    limit: int = 100,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """Every package on the selected devices (inside ``scope``), by package: devices, distinct versions, the
    most common version (its code and name) and its share of the package's devices.

    The whole fleet's page is the next ``limit`` packages (a loose index scan) counted over their range of
    the package index; a package held by revoked devices only drops out, and the next packages fill its
    place. A selector's page is the first ``limit`` packages on the devices it matches."""
    chosen, fleet, text_ = _scope(selector, settings, scope)
    if not fleet:
        packages: Select[Any] = select(_APPS.c.package).where(chosen)
        if after is not None:
            packages = packages.where(_APPS.c.package > after)
        page = packages.group_by(_APPS.c.package).order_by(_APPS.c.package).limit(limit).subquery()
        with _limited(db, settings, text_):
            return _summaries(db, _APPS.c.package.in_(select(page.c.package)), chosen)
    found: list[dict[str, Any]] = []
    while len(found) < limit:
        candidates = _next_packages(db, after, limit - len(found))
        if not candidates:
            break
        found += _summaries(db, _APPS.c.package.between(candidates[0], candidates[-1]), chosen)
        after = candidates[-1]
    return found[:limit]  # a package reported between the two statements could add one


def package_versions(
    db: Session, settings: Settings, package: str, *, selector: str | None = None, scope: str | None = None
) -> dict[str, Any]:
    """One package on the selected devices (inside ``scope``): devices per version code (newest first) with a
    version name."""
    chosen, _fleet, text_ = _scope(selector, settings, scope)
    query = (
        select(
            _APPS.c.version_code, func.max(_APPS.c.version_name).label("version_name"), func.count().label("devices")
        )
        .where(_APPS.c.package == package, chosen)
        .group_by(_APPS.c.version_code)
        .order_by(_APPS.c.version_code.desc())
    )
    with _limited(db, settings, text_):
        rows = db.execute(query).mappings().all()
    total = sum(int(r["devices"]) for r in rows)
    if total == 0:
        raise NotFound(f"no selected device has {package}")
    versions = [
        {
            "version_code": r["version_code"],
            "version_name": r["version_name"],
            "devices": int(r["devices"]),
            "share": round(int(r["devices"]) / total, 4),
        }
        for r in rows
    ]
    return {"package": package, "devices": total, "versions": versions}


def stale_inventories(db: Session, settings: Settings, *, horizon: Any) -> int:
    """Unrevoked devices whose inventory was last known current before ``horizon`` (or never)."""
    condition = and_(
        Device.revoked_at.is_(None), or_(Device.inventory_seen_at.is_(None), Device.inventory_seen_at < horizon)
    )
    return int(db.execute(select(func.count()).select_from(Device).where(condition)).scalar_one())
