"""The heartbeat fields a device may send, checked (the one definition; the API and the seed's helper use it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.base import validation
from core.base.errors import InvalidArgument
from core.models import NETWORK_TYPES

#: the fields a heartbeat stores, each with its PostgreSQL type: every insert path (the seed's helper, the
#: API's per-request and batched statements) builds its column list from this one
STORED_FIELDS: dict[str, str] = {
    "status": "text",
    "battery_pct": "int",
    "plugged": "bool",
    "network_type": "text",
    "agent_version": "text",
}


def validate_heartbeat_data(data: object) -> dict[str, Any]:
    """The known heartbeat fields, checked; unknown keys are ignored and never stored."""
    if not isinstance(data, Mapping):
        raise InvalidArgument("heartbeat_data must be a mapping", field="heartbeat_data")
    status = data.get("status")
    if status is not None and (not isinstance(status, str) or not validation.STATUS_RE.fullmatch(status)):
        raise InvalidArgument("status must be a short lowercase word such as 'ok'", field="status")
    battery = data.get("battery_pct")
    if battery is not None and (isinstance(battery, bool) or not isinstance(battery, int) or not 0 <= battery <= 100):
        raise InvalidArgument("battery_pct must be an integer from 0 to 100", field="battery_pct")
    plugged = data.get("plugged")
    if plugged is not None and not isinstance(plugged, bool):
        raise InvalidArgument("plugged must be true or false", field="plugged")
    network = data.get("network_type")
    if network is not None and network not in NETWORK_TYPES:
        raise InvalidArgument(f"network_type must be one of {', '.join(NETWORK_TYPES)}", field="network_type")
    agent = validation.text(data.get("agent_version"), "agent_version", max_length=64)
    # the keys of STORED_FIELDS, in its order (tests/core/test_db_utils.py holds them together)
    return {
        "status": status,
        "battery_pct": battery,
        "plugged": plugged,
        "network_type": network,
        "agent_version": agent,
    }
