"""Bodies of the admin endpoints added for accountability and integration (tokens, keys, audit, webhooks).

Request bodies forbid unknown fields (422), as every admin body does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from core.base.event_types import EVENT_TYPES
from core.events.webhooks import MAX_URL_LENGTH
from nexmdm_api.schemas import TEXT_PATTERN, ApkBuildOut, Dispatch
from nexmdm_api.schemas_fleet import LabelSet, ScopeText

Role = Literal["viewer", "operator", "admin"]
KEY_NAME_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"


class TokenIn(msgspec.Struct, forbid_unknown_fields=True):
    uses: Annotated[int, Meta(ge=1, le=1_000_000)] = 1
    expires_in_seconds: Annotated[int, Meta(ge=60, le=365 * 86400)] = 3600
    note: Annotated[str, Meta(max_length=200, pattern=TEXT_PATTERN)] | None = None
    #: every device enrolled with the token starts with these (checked by core, as the CLI's --label)
    labels: LabelSet = {}


class TokenOut(msgspec.Struct):
    id: str
    state: str
    uses: int
    max_uses: int
    note: str | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    labels: dict[str, str] = {}


class TokenCreated(TokenOut):
    #: shown once, never stored
    secret: str = ""


class TokenPage(msgspec.Struct):
    items: list[TokenOut]
    next_cursor: str | None


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=64, pattern=KEY_NAME_PATTERN)]
    role: Role = "admin"
    #: a selector limiting every device the key reaches (``store=42``); absent: the whole fleet
    scope: ScopeText | None = None
    #: the key stops working after this many seconds (1 minute to 10 years); absent: never
    expires_in_seconds: Annotated[int, Meta(ge=60, le=3650 * 86400)] | None = None


class KeyOut(msgspec.Struct):
    id: str
    name: str
    role: str
    state: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    scope: str | None = None
    expires_at: datetime | None = None


class KeyCreated(KeyOut):
    secret: str = ""


class KeyPage(msgspec.Struct):
    items: list[KeyOut]
    next_cursor: str | None


class DispatchPage(msgspec.Struct):
    items: list[Dispatch]
    next_cursor: str | None


class AuditEventOut(msgspec.Struct):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    client_address: str | None
    outcome: str
    count: int
    details: dict[str, Any]


class AuditPage(msgspec.Struct):
    items: list[AuditEventOut]
    next_cursor: str | None


#: the event types as an enum in the OpenAPI document, from the one list in core.base.event_types
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]


#: printable, no spaces, http(s), a host without credentials (``core.events.webhooks.check_url``, which also
#: parses the host and the port: those rules are in the description)
_HOST = r"[A-Za-z0-9._~!$&'()*+,;=%-]+"  # RFC 3986's reg-name (an IDN host in its xn-- form)
_IPV6 = r"\[(?:(?:[0-9A-Fa-f]{1,4}:){7}|(?:[0-9A-Fa-f]{1,4}:){1,6}:|::)[0-9A-Fa-f]{1,4}\]"
_PORT = r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})?)?"
URL_PATTERN = rf"^https?://(?:{_HOST}|{_IPV6}){_PORT}(?:[/?#][^\x00-\x20\x7f]*)?$"
URL_DOC = (
    "an http:// or https:// URL with a host (ASCII: an international name in its xn-- form; IPv6 in brackets), "
    "a port from 0 to 65535 and no user:password@"
)


class WebhookIn(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, Meta(min_length=8, max_length=MAX_URL_LENGTH, pattern=URL_PATTERN, description=URL_DOC)]
    events: Annotated[list[EventType], Meta(min_length=1, max_length=len(EVENT_TYPES))]
    #: 32-128 printable ASCII characters; made by the server when absent (and then returned, once)
    secret: Annotated[str, Meta(min_length=32, max_length=128, pattern=r"^[!-~]+$")] | None = None


class WebhookOut(msgspec.Struct):
    id: str
    url: str
    events: list[str]
    created_at: datetime


class WebhookCreated(WebhookOut):
    #: the signing secret, only when the server made it (shown once)
    secret: str | None = None


class WebhookPage(msgspec.Struct):
    items: list[WebhookOut]
    next_cursor: str | None


class WebhookTest(msgspec.Struct):
    endpoint_id: str
    event_id: str


class DeliveryOut(msgspec.Struct):
    id: int
    event_id: str
    endpoint_id: str
    event_type: str
    device_id: str | None
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


class DeliveryPage(msgspec.Struct):
    items: list[DeliveryOut]
    next_cursor: str | None


class ApkBuildPage(msgspec.Struct):
    items: list[ApkBuildOut]
    next_cursor: str | None


class ApkDownloadOut(msgspec.Struct):
    id: int
    build_id: int
    version_code: int
    version_name: str
    source: str
    token_id: str | None
    ip: str | None
    created_at: datetime


class ApkDownloadPage(msgspec.Struct):
    items: list[ApkDownloadOut]
    next_cursor: str | None


class FailureGroupOut(msgspec.Struct):
    reason: str
    model: str
    os_version: str
    count: int
    sample_device_ids: list[str]


class CampaignFailuresOut(msgspec.Struct):
    campaign_id: str
    failed: int
    groups: list[FailureGroupOut]


class FailedDeviceOut(msgspec.Struct):
    device_id: str
    reason: str
    model: str
    os_version: str
    #: the ack's typed error code (docs/actions.md), null when the device gave none
    error_code: str | None
    detail: str | None
    failed_at: datetime | None


class FailedDevicePage(msgspec.Struct):
    items: list[FailedDeviceOut]
    next_cursor: str | None


class ApprovalOut(msgspec.Struct):
    """An approval of a destructive command or campaign (docs/approvals.md)."""

    id: str
    kind: str
    target_id: str
    device_id: str | None
    action: str
    payload: dict[str, Any] | None
    state: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    release_at: datetime | None
    ended_by: str | None
    ended_at: datetime | None


class ApprovalPage(msgspec.Struct):
    items: list[ApprovalOut]
    next_cursor: str | None
