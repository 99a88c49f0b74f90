"""Request and response bodies (msgspec structs; Litestar documents them in the OpenAPI schema).

Device bodies ignore unknown fields (agents update before servers do) and never store them; admin
bodies forbid them (``forbid_unknown_fields``), which Litestar reports as a validation error (422).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from core.base.validation import DEVICE_ID_RE, MAX_PAYLOAD_BYTES, REQUEST_ID_RE, STATUS_RE
from core.commands.action_schemas import ERROR_CODES

#: core's patterns (``core.base.validation``), anchored as JSON Schema reads a pattern
DEVICE_ID_PATTERN = f"^{DEVICE_ID_RE.pattern}$"
REQUEST_ID_PATTERN = f"^{REQUEST_ID_RE.pattern}$"
#: free text never holds control or bidi characters (``core.base.validation.text``); documented and enforced
TEXT_PATTERN = r"^[^\x00-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]*$"
DeviceId = Annotated[str, Meta(min_length=1, max_length=128, pattern=DEVICE_ID_PATTERN)]
ShortText = Annotated[str, Meta(max_length=64, pattern=TEXT_PATTERN)]
ModelText = Annotated[str, Meta(max_length=128, pattern=TEXT_PATTERN)]
FcmToken = Annotated[str, Meta(max_length=4096, pattern=TEXT_PATTERN)]
#: the largest integer accepted in a path (a 32-bit signed id); a larger one overflowed SQLite (a 500)
MAX_PATH_INT = 2**31 - 1
TokenText = Annotated[str, Meta(max_length=128, pattern=TEXT_PATTERN)]
DetailText = Annotated[str, Meta(max_length=1000, pattern=TEXT_PATTERN)]


class ActionPayloads:
    """Marks a command's ``payload``: the document refers to every action's payload schema (``nexmdm_api.openapi``)."""


class ActionResults:
    """Marks an ack's ``result``: the document refers to every action's result schema (``nexmdm_api.openapi``)."""


PAYLOADS = ActionPayloads()
RESULTS = ActionResults()


#: a payload's values, at any depth: JSON without control characters in its strings (a component of the
#: document, ``nexmdm_api.openapi.PAYLOAD_VALUE``); its size is said in words. ``core.base.validation.payload``
#: checks both.
PAYLOAD_VALUE_REF = "#/components/schemas/PayloadValue"
Payload = Annotated[
    dict[str, Any],
    PAYLOADS,
    Meta(
        description=f"a JSON object of at most {MAX_PAYLOAD_BYTES} bytes serialized (FCM's limit), without control "
        "characters in its strings",
        extra_json_schema={
            "propertyNames": {"pattern": TEXT_PATTERN},
            "additionalProperties": {"$ref": PAYLOAD_VALUE_REF},
        },
    ),
]


class ConfiguredActions:
    """Marks the ``action`` field: the document lists the configured actions (``nexmdm_api.app``)."""


ACTIONS = ConfiguredActions()


#: the error codes of a failed ack (``core.commands.action_schemas.ERROR_CODES``)
ErrorCode = Literal[ERROR_CODES]  # type: ignore[valid-type]
NetworkType = Literal["wifi", "cellular", "ethernet", "vpn", "bluetooth", "none", "unknown"]


# ----------------------------------------------------------------------------------------- device


class EnrollIn(msgspec.Struct):
    device_id: DeviceId
    fcm_token: FcmToken | None = None
    model: ModelText | None = None
    os_version: ShortText | None = None
    agent_version: ShortText | None = None
    #: the device's current token, to rotate it when the device is already enrolled
    current_device_token: TokenText | None = None
    #: the one-time secret of the answer that was lost, for a retry (see docs/api.md)
    enrollment_secret: TokenText | None = None


class EnrollOut(msgspec.Struct):
    device_id: str
    device_token: str
    #: present it in a retry if this answer is lost (until the first heartbeat, 10 minutes at most)
    enrollment_secret: str
    #: the device protocol this server speaks (docs/device-protocol.md)
    protocol: int = 2


class HeartbeatIn(msgspec.Struct):
    status: Annotated[str, Meta(pattern=f"^{STATUS_RE.pattern}$")] | None = None
    # gt=-1, not ge=0: Litestar 2 leaves a bound of 0 out of the OpenAPI document (it tests the value's truth);
    # for an integer it is the same bound, and msgspec reports it as ">= 0"
    battery_pct: Annotated[int, Meta(gt=-1, le=100)] | None = None
    plugged: bool | None = None
    network_type: NetworkType | None = None
    agent_version: ShortText | None = None
    fcm_token: FcmToken | None = None
    device_id: DeviceId | None = None
    #: the hash of the inventory the device holds (docs/device-protocol.md)
    inventory_hash: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")] | None = None


class HeartbeatOut(msgspec.Struct, omit_defaults=True):
    created: bool
    bucket_start: datetime
    #: ``"wanted"`` when the server holds another inventory than the device's, or none (absent otherwise)
    inventory: Literal["wanted"] | None = None
    #: the device's effective profile hash (absent: no profile matches it); another hash than the one it
    #: applied means ``GET /v1/profile``
    profile: str | None = None


class PendingCommand(msgspec.Struct):
    request_id: str
    action: str
    payload: dict[str, Any] | None
    created_at: datetime


class PendingCommandsOut(msgspec.Struct):
    items: list[PendingCommand]


class AckIn(msgspec.Struct):
    status: Literal["completed", "failed"]
    detail: DetailText | None = None
    #: a completed ack's answer, checked against the action's result schema (``GET /v1/actions``)
    result: Annotated[dict[str, Any], RESULTS] | None = None
    #: why a failed ack failed
    error_code: ErrorCode | None = None


# ------------------------------------------------------------------------------------------ admin


class CommandIn(msgspec.Struct, forbid_unknown_fields=True):
    action: Annotated[str, Meta(min_length=1, max_length=32), ACTIONS]
    payload: Payload | None = None


class Dispatch(msgspec.Struct):
    request_id: str
    device_id: str
    action: str
    payload: dict[str, Any] | None
    status: str
    fcm_status: str
    created_at: datetime
    sent_at: datetime | None
    acked_at: datetime | None
    finished_at: datetime | None
    attempts: int
    last_error: str | None
    fcm_message_id: str | None
    next_attempt_at: datetime | None
    replay_count: int
    ack_detail: str | None
    result: dict[str, Any] | None = None
    error_code: str | None = None


class HistoryStep(msgspec.Struct):
    status: str
    at: datetime


class DispatchWithHistory(Dispatch):
    history: list[HistoryStep] = []


class DeviceOut(msgspec.Struct):
    device_id: str
    state: str
    last_seen_at: datetime | None
    status: str | None
    battery_pct: int | None
    plugged: bool | None
    network_type: str | None
    agent_version: str | None
    model: str | None
    os_version: str | None
    has_fcm_token: bool
    enrolled_at: datetime
    revoked_at: datetime | None
    #: enrollment generation: grows by one each time this id enrolls again after a revocation
    generation: int
    labels: dict[str, str] = {}


class DevicePage(msgspec.Struct):
    items: list[DeviceOut]
    next_cursor: str | None


class HeartbeatRow(msgspec.Struct):
    bucket_start: datetime
    received_at: datetime
    status: str | None
    battery_pct: int | None
    plugged: bool | None
    network_type: str | None
    agent_version: str | None


class HeartbeatPage(msgspec.Struct):
    items: list[HeartbeatRow]
    next_cursor: str | None


# -------------------------------------------------------------------------------------------- APK


class ApkBuildRemoved(msgspec.Struct):
    id: int
    version_code: int
    removed_at: datetime


class ApkBuildOut(msgspec.Struct):
    id: int
    version_code: int
    version_name: str
    size_bytes: int
    sha256: str
    created_at: datetime
    download_url: str
    #: the package the APK's manifest declares, read at upload; null when unreadable or uploaded before
    package: str | None = None


# ----------------------------------------------------------------------------------------- health


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    database: str
    migration: str | None
    expected_migration: str | None
    detail: str | None = None


#: the response struct that ``convert`` makes
StructT = TypeVar("StructT")


def convert(value: Any, kind: type[StructT]) -> StructT:
    """A core dict as a response struct (extra keys are dropped)."""
    return msgspec.convert(value, kind, from_attributes=True)
