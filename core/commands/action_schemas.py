"""The built-in actions' payload and result schemas (JSON Schema 2020-12), read by ``core.commands.catalogue``.

Payloads are closed (``additionalProperties: false``): an admin's typo is a 422, not a field the agent
ignores. Results are open: an agent newer than the server may report more, and only the declared fields
are stored (``catalogue.Action.stored_result``).
"""

from __future__ import annotations

from typing import Any

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Android's package rule: dot-separated segments of ``[A-Za-z][A-Za-z0-9_]*``, at least two, <= 255 characters
PACKAGE_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$"
#: an RFC 3339 date-time (``format`` alone is only an annotation unless a format checker is installed) that
#: Python reads (``core.devices.locations``): real months and days (a 29 February
#: of a year that has none is the one date it lets through), ASCII digits, at most microseconds
DATE_TIME_PATTERN = (
    r"^[1-9][0-9]{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-9]))T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
#: free text: no control or bidi characters (as ``core.base.validation.text``)
TEXT_PATTERN = r"^[^\x00-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]*$"
PHONE_PATTERN = r"^\+?[0-9][0-9 ()./-]{2,31}$"


def _object(
    properties: dict[str, Any] | None = None, required: tuple[str, ...] = (), *, closed: bool
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties or {}}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def _text(max_length: int, description: str, *, min_length: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length, "pattern": TEXT_PATTERN}
    if min_length:
        schema["minLength"] = min_length
    return schema | {"description": description}


def payload(properties: dict[str, Any] | None = None, *required: str) -> dict[str, Any]:
    return _object(properties, required, closed=True)


def result(properties: dict[str, Any] | None = None, *required: str) -> dict[str, Any]:
    return _object(properties, required, closed=False)


LOCATION = result(
    {
        "lat": {"type": "number", "minimum": -90, "maximum": 90, "description": "latitude, WGS 84 degrees"},
        "lon": {"type": "number", "minimum": -180, "maximum": 180, "description": "longitude, WGS 84 degrees"},
        "accuracy_m": {"type": "number", "minimum": 0, "maximum": 1000000, "description": "radius of 68 % confidence"},
        "fixed_at": {
            "type": "string",
            "format": "date-time",
            "pattern": DATE_TIME_PATTERN,
            "description": "when the fix was taken (RFC 3339; not in the future)",
        },
    },
    "lat",
    "lon",
    "accuracy_m",
    "fixed_at",
)
PACKAGE = {"type": "string", "minLength": 3, "maxLength": 255, "pattern": PACKAGE_PATTERN}
BUILD_ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1, "description": "an APK build's id"}
INSTALLED = result(
    {
        "version_code": {"type": "integer", "minimum": 0, "description": "the version now installed"},
        "package": PACKAGE,
    }
)

#: name -> (summary, payload schema, result schema, destructive, least role)
BUILTIN: dict[str, tuple[str, dict[str, Any], dict[str, Any], bool, str]] = {
    "ping": ("Answer at once: proves the device receives commands.", payload(), result(), False, "operator"),
    "sync": ("Heartbeat and report inventory and profile status now.", payload(), result(), False, "operator"),
    "reboot": ("Restart the device.", payload(), result(), False, "operator"),
    "lock": (
        "Lock the screen, optionally showing a message.",
        payload({"message": _text(200, "shown on the lock screen")}),
        result(),
        False,
        "operator",
    ),
    "ring": (
        "Ring at full volume for some seconds (finding a device nearby).",
        payload({"seconds": {"type": "integer", "minimum": 1, "maximum": 300}}, "seconds"),
        result(),
        False,
        "operator",
    ),
    "locate": ("Report the device's location.", payload(), LOCATION, False, "operator"),
    "install_apk": (
        "Download an APK build from this server and install it.",
        payload({"build_id": BUILD_ID}, "build_id"),
        INSTALLED,
        False,
        "operator",
    ),
    "uninstall_app": ("Remove an app.", payload({"package": PACKAGE}, "package"), result(), False, "operator"),
    "clear_app_data": (
        "Clear an app's data and cache.",
        payload({"package": PACKAGE}, "package"),
        result(),
        False,
        "operator",
    ),
    "update_agent": (
        "Update the NexMDM agent from an APK build of this server.",
        payload({"build_id": BUILD_ID}, "build_id"),
        INSTALLED,
        False,
        "operator",
    ),
    "lost_mode": (
        "Lock the device in lost mode with a message (and a phone number to call); it then locates periodically.",
        payload(
            {
                "message": _text(200, "shown on the lost-mode screen", min_length=1),
                "phone": {"type": "string", "pattern": PHONE_PATTERN, "description": "a number the finder can call"},
            },
            "message",
        ),
        result({"location": LOCATION}),
        False,
        "operator",
    ),
    "lost_mode_off": ("End lost mode.", payload(), result(), False, "operator"),
    "wipe": (
        "Factory-reset the device: every app and its data are erased.",
        payload(
            {
                "reason": _text(200, "why (kept in the audit trail)", min_length=1),
                "keep_sd_card": {"type": "boolean", "description": "leave external storage untouched"},
            },
            "reason",
        ),
        result(),
        True,
        "admin",
    ),
}

#: an operator's own action without a schema file entry: any JSON object as payload and as result
UNTYPED = {"type": "object"}

#: the error codes a failed ack may carry
ERROR_CODES = (
    "UNSUPPORTED",
    "INVALID_PAYLOAD",
    "INSUFFICIENT_STORAGE",
    "USER_DECLINED",
    "DOWNLOAD_FAILED",
    "SIGNATURE_MISMATCH",
    "TIMEOUT",
    "INTERNAL",
)
ERROR_CODE_MEANINGS = {
    "UNSUPPORTED": "the agent does not know the action (or this device cannot do it)",
    "INVALID_PAYLOAD": "the agent refused the payload",
    "INSUFFICIENT_STORAGE": "not enough free storage (an install or update)",
    "USER_DECLINED": "the person at the device declined",
    "DOWNLOAD_FAILED": "the APK could not be downloaded",
    "SIGNATURE_MISMATCH": "the APK's signature differs from the installed app's",
    "TIMEOUT": "the action did not finish in the agent's time",
    "INTERNAL": "anything else went wrong in the agent",
}
