"""The selector terms on a device's reported inventory, compiled to SQL (parsed in ``core.devices.selectors``).

``@app(PACKAGE)`` and its version-code comparisons probe ``device_apps``' primary key (device, package);
``@api_level``, ``@security_patch`` and ``@manufacturer`` probe the device's ``device_inventory`` row.
Every term is an ``EXISTS`` (or ``NOT EXISTS``) correlated with ``devices.id``, so a device that never
reported an inventory follows the label rules: only the negative terms match it.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, exists, func, select

from core.base.validation import is_iso_date
from core.models import Device, DeviceApp, DeviceInventory

COLUMNS: dict[str, Any] = {
    "api_level": DeviceInventory.api_level,
    "security_patch": DeviceInventory.security_patch,
    "manufacturer": DeviceInventory.manufacturer,
}


def value_problem(name: str, value: str) -> str | None:
    """What is wrong with a value of an inventory field in a selector (``None``: nothing)."""
    if name == "api_level" and not (value.isdigit() and len(value) <= 4):
        return f"@api_level is a whole number such as 33 (got {value!r})"
    if name == "security_patch" and not is_iso_date(value):
        return f"@security_patch is a date YYYY-MM-DD (got {value!r})"
    return None


def _has_app(package: str, version: ColumnElement[bool] | None = None) -> ColumnElement[bool]:
    """A probe of ``device_apps``' primary key (device, package)."""
    query = select(DeviceApp.device_id).where(DeviceApp.device_id == Device.id, DeviceApp.package == package)
    if version is not None:
        query = query.where(version)
    return exists(query)


def app_clause(op: str, values: tuple[str, ...]) -> ColumnElement[bool]:
    """``@app(P)`` (``exists``), ``!@app(P)`` (``!``), or ``@app(P) op N``."""
    package = values[0]
    if op == "exists":
        return _has_app(package)
    if op == "!":
        return ~_has_app(package)
    code = int(values[1])
    column = DeviceApp.version_code
    if op == "!=":  # a device without the app has no version code: != matches it (Kubernetes' rule)
        return ~_has_app(package, column == code)
    compared = {"=": column == code, "<": column < code, "<=": column <= code, ">": column > code, ">=": column >= code}
    return _has_app(package, compared[op])


def _inventory(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """A probe of the device's ``device_inventory`` row (its primary key)."""
    return exists(select(DeviceInventory.device_id).where(DeviceInventory.device_id == Device.id, condition))


def field_clause(name: str, op: str, raw: tuple[str, ...]) -> ColumnElement[bool]:
    """``@api_level``, ``@security_patch`` or ``@manufacturer`` compared (``!=``/``notin`` match a device
    without the field, as for labels)."""
    column: ColumnElement[Any] = COLUMNS[name]
    values: list[Any] = list(raw)
    if name == "api_level":
        values = [int(v) for v in values]
    elif name == "security_patch":
        values = [date.fromisoformat(v) for v in values]
    else:
        column, values = func.lower(column), [v.lower() for v in values]
    positive = {"!=": "=", "notin": "in"}.get(op, op)
    conditions: dict[str, ColumnElement[bool]] = {
        "=": column == values[0],
        "in": column.in_(values),
        "<": column < values[0],
        "<=": column <= values[0],
        ">": column > values[0],
        ">=": column >= values[0],
    }
    probe = _inventory(conditions[positive])
    return ~probe if positive != op else probe  # != and notin match a device without the field
