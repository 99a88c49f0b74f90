"""Bodies of the action catalogue and of device locations (msgspec structs documented in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from core.commands.action_schemas import DATE_TIME_PATTERN

ACTION_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"


class ActionOut(msgspec.Struct):
    name: str
    summary: str
    destructive: bool
    least_role: str
    builtin: bool
    typed: bool
    #: JSON Schema 2020-12; also the component ``ActionPayload_{name}`` of this document
    payload_schema: dict[str, Any]
    #: JSON Schema 2020-12; also the component ``ActionResult_{name}`` of this document
    result_schema: dict[str, Any]


class ActionList(msgspec.Struct):
    items: list[ActionOut]
    #: always null: the catalogue is one page
    next_cursor: str | None = None


class LocationIn(msgspec.Struct):
    """A periodic fix from a device in lost mode (the shape of ``locate``'s result)."""

    lat: Annotated[float, Meta(ge=-90, le=90)]
    lon: Annotated[float, Meta(ge=-180, le=180)]
    accuracy_m: Annotated[float, Meta(ge=0, le=1_000_000)]
    fixed_at: Annotated[str, Meta(pattern=DATE_TIME_PATTERN, extra_json_schema={"format": "date-time"})]


class LocationOut(msgspec.Struct):
    lat: float
    lon: float
    accuracy_m: float
    fixed_at: datetime
    received_at: datetime
    #: ``locate`` (a command's result) or ``lost_mode`` (a periodic report, or lost mode's own fix)
    source: str
    request_id: str | None


class LostModeOut(msgspec.Struct):
    since: datetime
    message: str
    phone: str | None
    request_id: str


class LastLocationOut(msgspec.Struct):
    device_id: str
    location: LocationOut | None
    lost_mode: LostModeOut | None


class LocationRow(LocationOut):
    id: int = 0


class LocationPage(msgspec.Struct):
    items: list[LocationRow]
    next_cursor: str | None
