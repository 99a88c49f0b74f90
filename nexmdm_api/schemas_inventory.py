"""Answers of the inventory endpoints: a device's report stored, its inventory, apps and app changes, and
the fleet's apps (``core.inventory``). The report bodies themselves are checked by ``core.inventory.document``
(one owner of the rules; every refusal is a 422 naming the field)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

PACKAGE_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$"


class InventoryStored(msgspec.Struct):
    hash: str
    #: false when the server already held this inventory (nothing was written)
    changed: bool
    app_changes: int


class DeviceInventoryOut(msgspec.Struct):
    device_id: str
    hash: str
    device: dict[str, Any]
    app_count: int
    reported_at: datetime
    updated_at: datetime


class DeviceAppRow(msgspec.Struct):
    package: str
    version_code: int
    version_name: str | None
    installer: str | None
    system: bool | None
    enabled: bool | None
    signing_sha256: str | None


class DeviceAppPage(msgspec.Struct):
    items: list[DeviceAppRow]
    next_cursor: str | None


class AppChangeRow(msgspec.Struct):
    id: int
    package: str
    change: str
    from_version_code: int | None
    to_version_code: int | None
    at: datetime


class AppChangePage(msgspec.Struct):
    items: list[AppChangeRow]
    next_cursor: str | None


class FleetAppRow(msgspec.Struct):
    package: str
    devices: int
    versions: int
    top_version_code: int
    top_version_name: str | None
    top_share: float


class FleetAppPage(msgspec.Struct):
    items: list[FleetAppRow]
    next_cursor: str | None


class PackageVersionRow(msgspec.Struct):
    version_code: int
    version_name: str | None
    devices: int
    share: float


class PackageOut(msgspec.Struct):
    package: str
    devices: int
    versions: list[PackageVersionRow]
