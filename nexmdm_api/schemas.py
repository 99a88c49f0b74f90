"""Request and response bodies (msgspec structs; Litestar documents them in the OpenAPI schema).

Device bodies ignore unknown fields (agents update before servers do) and never store them; admin
bodies forbid them (``forbid_unknown_fields``), which Litestar reports as a validation error (422).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from core.commands.action_schemas import ERROR_CODES

DEVICE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._~:-]{1,255}$"
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


class ConfiguredActions:
    """Marks the ``action`` field: the document lists the configured actions (``nexmdm_api.app``)."""


ACTIONS = ConfiguredActions()


class ActionPayloads:
    """Marks a command's ``payload``: the document refers to every action's payload schema (``nexmdm_api.openapi``)."""


class ActionResults:
    """Marks an ack's ``result``: the document refers to every action's result schema (``nexmdm_api.openapi``)."""


PAYLOADS = ActionPayloads()
RESULTS = ActionResults()
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


class HeartbeatIn(msgspec.Struct):
    status: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")] | None = None
    # gt=-1, not ge=0: Litestar 2 leaves a bound of 0 out of the OpenAPI document (it tests the value's truth);
    # for an integer it is the same bound, and msgspec reports it as ">= 0"
    battery_pct: Annotated[int, Meta(gt=-1, le=100)] | None = None
    plugged: bool | None = None
    network_type: NetworkType | None = None
    agent_version: ShortText | None = None
    fcm_token: FcmToken | None = None
    device_id: DeviceId | None = None


class HeartbeatOut(msgspec.Struct):
    created: bool
    bucket_start: datetime


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
    payload: Annotated[dict[str, Any], PAYLOADS] | None = None


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


# ------------------------------------------------------------------------------------------ fleet

LabelKey = Annotated[str, Meta(min_length=1, max_length=127)]
LabelValue = Annotated[str, Meta(max_length=63)]
Percent = Annotated[float, Meta(ge=0, le=100)]
NoteText = Annotated[str, Meta(max_length=200, pattern=TEXT_PATTERN)]
#: no C0/C1 control characters (an ESC sequence would reach an operator's terminal; a NUL, PostgreSQL's
#: driver) and no bidi overrides in a selector, as in other stored text (issue #21)
SELECTOR_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]*$"
SelectorText = Annotated[str, Meta(max_length=1024, pattern=SELECTOR_PATTERN)]


class LabelsPatchIn(msgspec.Struct, forbid_unknown_fields=True):
    set: dict[LabelKey, LabelValue] = {}
    remove: list[LabelKey] = []


class BulkLabelsIn(msgspec.Struct, forbid_unknown_fields=True):
    selector: SelectorText
    set: dict[LabelKey, LabelValue] = {}
    remove: list[LabelKey] = []


class DeviceLabelsOut(msgspec.Struct):
    device_id: str
    labels: dict[str, str]


class BulkLabelsOut(msgspec.Struct):
    selector: str
    matched: int


class LabelCount(msgspec.Struct):
    key: str
    value: str
    devices: int


class LabelCountsOut(msgspec.Struct):
    items: list[LabelCount]


class WavesIn(msgspec.Struct, forbid_unknown_fields=True):
    size: Annotated[int, Meta(ge=1)] | None = None
    percent: Annotated[float, Meta(gt=0, le=100)] | None = None
    interval_seconds: Annotated[int, Meta(gt=-1, le=30 * 86400)] | None = None
    min_success_pct: Percent | None = None
    max_failure_pct: Percent | None = None


class CampaignIn(msgspec.Struct, forbid_unknown_fields=True):
    action: Annotated[str, Meta(min_length=1, max_length=32), ACTIONS]
    payload: Annotated[dict[str, Any], PAYLOADS] | None = None
    selector: SelectorText | None = None
    device_ids: Annotated[list[DeviceId], Meta(max_length=10_000)] | None = None
    waves: WavesIn | None = None
    expires_in_seconds: Annotated[int, Meta(ge=60, le=30 * 86400)] | None = None
    note: NoteText | None = None


class ResumeIn(msgspec.Struct, forbid_unknown_fields=True):
    ignore_failures: bool = False
    min_success_pct: Percent | None = None
    max_failure_pct: Percent | None = None


class WavesOut(msgspec.Struct):
    size: int
    percent: float | None
    count: int
    released: int
    interval_seconds: int | None
    min_success_pct: float | None
    max_failure_pct: float | None
    next_at: datetime | None


class CampaignCounts(msgspec.Struct):
    targeted: int
    queued: int
    pending: int
    acked: int
    failed: int
    expired: int
    cancelled: int
    pushed: int
    push_failed: int
    push_skipped: int
    fcm_configured: bool = False


class CampaignOut(msgspec.Struct):
    id: str
    status: str
    reason: str | None
    action: str
    payload: dict[str, Any] | None
    selector: str | None
    note: str | None
    idempotency_key: str
    targeted: int
    waves: WavesOut
    expires_in_seconds: int
    created_at: datetime
    updated_at: datetime
    last_wave_at: datetime | None
    finished_at: datetime | None
    counts: CampaignCounts


class CampaignPage(msgspec.Struct):
    items: list[CampaignOut]
    next_cursor: str | None


class CampaignDeviceOut(msgspec.Struct):
    device_id: str
    wave: int
    status: str
    request_id: str | None
    fcm_status: str | None
    released_at: datetime | None
    finished_at: datetime | None
    #: the device's model and its ack's detail (why a target failed), so no request per command is needed
    model: str | None = None
    detail: str | None = None
    error_code: str | None = None


class CampaignDevicePage(msgspec.Struct):
    items: list[CampaignDeviceOut]
    next_cursor: str | None
