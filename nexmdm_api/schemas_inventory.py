"""The inventory endpoints' bodies and answers (docs/device-protocol.md).

The report bodies are declared here so that the OpenAPI document (and the fuzzer that reads it) knows
their shape; ``core.inventory.document`` still checks every report, as it owns the rules JSON Schema
cannot say (the hash, one entry per package, real dates). Either way a refusal is a 422 naming the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from core.inventory.document import MAX_APPS, MAX_INT, MAX_VERSION_CODE
from nexmdm_api.schemas import TEXT_PATTERN

PACKAGE_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$"
Package = Annotated[str, Meta(max_length=255, pattern=PACKAGE_PATTERN)]
Hash = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
# gt=-1, not ge=0: Litestar 2 leaves a bound of 0 out of the OpenAPI document (see HeartbeatIn)
Count = Annotated[int, Meta(gt=-1, le=MAX_INT)]


def _text(limit: int) -> Any:
    return Annotated[str, Meta(max_length=limit, pattern=TEXT_PATTERN)]


class InventoryDevice(msgspec.Struct, forbid_unknown_fields=True):
    manufacturer: _text(128) | None = None  # type: ignore[valid-type]
    model: _text(128) | None = None  # type: ignore[valid-type]
    os_version: _text(64) | None = None  # type: ignore[valid-type]
    api_level: Annotated[int, Meta(ge=1, le=1000)] | None = None
    security_patch: (
        Annotated[str, Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", extra_json_schema={"format": "date"})] | None
    ) = None
    build_fingerprint: _text(256) | None = None  # type: ignore[valid-type]
    storage_total_mb: Count | None = None
    storage_free_mb: Count | None = None
    ram_mb: Count | None = None
    agent_version: _text(64) | None = None  # type: ignore[valid-type]
    serial: _text(128) | None = None  # type: ignore[valid-type]


class InventoryApp(msgspec.Struct, forbid_unknown_fields=True):
    package: Package
    version_code: Annotated[int, Meta(gt=-1, le=MAX_VERSION_CODE)]
    version_name: _text(64) | None = None  # type: ignore[valid-type]
    installer: _text(255) | None = None  # type: ignore[valid-type]
    system: bool | None = None
    enabled: bool | None = None
    signing_sha256: Annotated[str, Meta(pattern=r"^[0-9A-Fa-f]{64}$")] | None = None


class InventoryIn(msgspec.Struct, forbid_unknown_fields=True):
    """``PUT /v1/inventory``: the whole inventory and its hash."""

    hash: Hash
    device: InventoryDevice = msgspec.field(default_factory=InventoryDevice)
    apps: Annotated[list[InventoryApp], Meta(max_length=MAX_APPS)] = []


#: a PATCH's device fields: only those given change (``null``: no longer known); an absent field stays
#: absent from what the route hands core (``msgspec.to_builtins`` leaves UNSET out)
InventoryDeviceChange = msgspec.defstruct(
    "InventoryDeviceChange",
    [(f.name, f.type | msgspec.UnsetType, msgspec.UNSET) for f in msgspec.structs.fields(InventoryDevice)],
    forbid_unknown_fields=True,
)


class InventoryAppChanges(msgspec.Struct, forbid_unknown_fields=True):
    upsert: Annotated[list[InventoryApp], Meta(max_length=MAX_APPS)] = []
    remove: Annotated[list[Package], Meta(max_length=MAX_APPS)] = []


class InventoryDeltaIn(msgspec.Struct, forbid_unknown_fields=True):
    """``PATCH /v1/inventory``: a change on ``base_hash``; ``hash`` is the inventory's after it."""

    base_hash: Hash
    hash: Hash
    device: InventoryDeviceChange = msgspec.field(default_factory=InventoryDeviceChange)  # type: ignore[valid-type]
    apps: InventoryAppChanges = msgspec.field(default_factory=InventoryAppChanges)


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
