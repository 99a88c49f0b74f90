"""Fleet bodies: labels, selectors and campaigns (msgspec structs; documented by ``ClosedStructSchemaPlugin``).

The label and selector rules are core's (``core.base.labels``, ``core.devices.selectors``), anchored as JSON
Schema reads a pattern; what JSON Schema cannot say (a selector's grammar) the descriptions say.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from core.base.labels import KEY_RE, MAX_LABELS, VALUE_RE
from core.campaigns.records import MAX_DEVICE_IDS
from core.devices.selectors import MAX_LENGTH
from nexmdm_api.schemas import ACTIONS, TEXT_PATTERN, DeviceId, Payload

#: a selector's length limit in bytes (core's)
SELECTOR_MAX_BYTES = MAX_LENGTH
#: devices per wave: a 32-bit column (a larger size is one wave anyway)
MAX_WAVE_SIZE = 2**31 - 1

#: core's own label syntax (``core.base.labels``), anchored as JSON Schema reads a pattern: documented here,
#: checked by core (whose message says the rule in words)
LabelKey = Annotated[str, Meta(min_length=1, max_length=127, extra_json_schema={"pattern": f"^(?:{KEY_RE.pattern})$"})]
LabelValue = Annotated[str, Meta(max_length=63, extra_json_schema={"pattern": f"^(?:{VALUE_RE.pattern})$"})]
LABELS_DOC = f"at most {MAX_LABELS} labels"
LabelSet = Annotated[dict[LabelKey, LabelValue], Meta(max_length=MAX_LABELS, description=LABELS_DOC)]
LabelRemovals = Annotated[list[LabelKey], Meta(max_length=MAX_LABELS * 4)]
Percent = Annotated[float, Meta(ge=0, le=100)]
NoteText = Annotated[str, Meta(max_length=200, pattern=TEXT_PATTERN)]
#: no C0/C1 control characters (an ESC sequence would reach an operator's terminal; a NUL, PostgreSQL's
#: driver) and no bidi overrides in a selector, as in other stored text (issue #21)
SELECTOR_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]*$"
#: the selector's grammar is not a JSON Schema: its own ``format`` names it, the description says it
SELECTOR_FORMAT = "nexmdm-selector"
SELECTOR_DOC = (
    "A selector (Kubernetes' label-selector grammar plus `@` device fields; the server parses it and answers 422 "
    "`invalid_selector` with the position): `` (empty) or `all` for every device, else terms joined by `,` (AND), "
    "each `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`, or "
    "`@field` with `=`, `!=`, `in`, `notin` (and `<`, `<=`, `>`, `>=` for `@agent_version` and `@battery_pct`) "
    "over `@state`, `@agent_version`, `@model`, `@os_version`, `@network_type`, `@battery_pct`, `@plugged`, "
    "and from the reported inventory `@manufacturer`, `@api_level` (compared as a number), `@security_patch` "
    "(a date, `YYYY-MM-DD`), `@app(PACKAGE)` (installed), `!@app(PACKAGE)` and `@app(PACKAGE)` with a comparison "
    "on its version code (`@app(com.acme.pos)>=4200`), and `@lost` (`true`, `false`: in lost mode). "
    f'At most {SELECTOR_MAX_BYTES} bytes, 32 terms, 64 values per `in`. See docs/campaigns.md, "Selectors".'
)
SelectorText = Annotated[
    str,
    Meta(
        max_length=SELECTOR_MAX_BYTES,
        pattern=SELECTOR_PATTERN,
        description=SELECTOR_DOC,
        extra_json_schema={"format": SELECTOR_FORMAT},
    ),
]


#: a key's (or a person's) scope: a selector that picks part of the fleet and names no field that changes by
#: itself; its own ``format``, as the selector's, since JSON Schema cannot say either grammar
SCOPE_FORMAT = "nexmdm-scope"
SCOPE_DOC = (
    "A scope: a selector (the `nexmdm-selector` grammar) limiting every device the key reaches, such as "
    "`store=42`; not `all` or empty (omit the scope for the whole fleet) and without `@state` (it changes "
    "without anyone acting). The server stores it normalized and answers 422 `invalid_argument` naming `scope`. "
    'See docs/api.md, "Scoped roles".'
)
ScopeText = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=SELECTOR_MAX_BYTES,
        pattern=SELECTOR_PATTERN,
        description=SCOPE_DOC,
        extra_json_schema={"format": SCOPE_FORMAT},
    ),
]


class LabelsPatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """Labels to set and to remove (a key is not in both); the device keeps at most 32."""

    set: LabelSet = {}
    remove: LabelRemovals = []


class BulkLabelsIn(msgspec.Struct, forbid_unknown_fields=True):
    """Labels to set and to remove (a key is not in both) on every device the selector matches."""

    selector: SelectorText
    set: LabelSet = {}
    remove: LabelRemovals = []


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


class _WaveGates(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    interval_seconds: Annotated[int, Meta(gt=-1, le=30 * 86400)] | None = None
    min_success_pct: Percent | None = None
    max_failure_pct: Percent | None = None


WaveSize = Annotated[int, Meta(ge=1, le=MAX_WAVE_SIZE)]
WavePercent = Annotated[float, Meta(gt=0, le=100)]


class WavesBySize(_WaveGates, kw_only=True):
    """Waves of `size` devices."""

    size: WaveSize


class WavesByPercent(_WaveGates, kw_only=True):
    """Waves of `percent` of the targets each."""

    percent: WavePercent


class WavesIn(_WaveGates, kw_only=True):
    """Release in waves: exactly one of `size` (devices per wave) or `percent` (of the targets per wave)."""

    #: what the OpenAPI document shows instead of this struct: exactly one of them (``oneOf``); the server decodes
    #: this struct and core checks the rule (``nexmdm_api.openapi.ClosedStructSchemaPlugin``)
    openapi_variants: ClassVar[tuple[type[msgspec.Struct], ...]] = (WavesBySize, WavesByPercent)

    size: WaveSize | None = None
    percent: WavePercent | None = None


#: a campaign's success condition: a selector that names something (not `all`, not empty)
SuccessWhen = Annotated[
    SelectorText,
    Meta(
        extra_json_schema={"minLength": 1, "not": {"enum": ["all"]}},
        description="A selector a device matches once the command succeeded (`@app(com.acme.pos)>=4200`); "
        "with it, gates count outcomes. " + SELECTOR_DOC,
    ),
]


class _CampaignFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: ``outcome_timeout_seconds`` is the time allowed to match ``success_when``: alone it is refused
    openapi_dependent_required: ClassVar[dict[str, list[str]]] = {"outcome_timeout_seconds": ["success_when"]}

    action: Annotated[str, Meta(min_length=1, max_length=32), ACTIONS]
    payload: Payload | None = None
    waves: WavesIn | None = None
    expires_in_seconds: Annotated[int, Meta(ge=60, le=30 * 86400)] | None = None
    note: NoteText | None = None
    #: a target succeeds once its device matches it after the ack (already matching: skipped)
    success_when: SuccessWhen | None = None
    outcome_timeout_seconds: Annotated[int, Meta(ge=60, le=30 * 86400)] | None = None


#: an empty selector is refused by core, with a hint (`all`)
CampaignSelector = Annotated[SelectorText, Meta(extra_json_schema={"minLength": 1})]
CampaignDeviceIds = Annotated[list[DeviceId], Meta(min_length=1, max_length=MAX_DEVICE_IDS)]


class CampaignBySelector(_CampaignFields, kw_only=True):
    """The devices a selector matches now (`all` for every device)."""

    selector: CampaignSelector


class CampaignByDeviceIds(_CampaignFields, kw_only=True):
    """These devices (at most 10,000)."""

    device_ids: CampaignDeviceIds


class CampaignIn(_CampaignFields, kw_only=True):
    """One command to many devices: exactly one of `selector` or `device_ids`."""

    openapi_variants: ClassVar[tuple[type[msgspec.Struct], ...]] = (CampaignBySelector, CampaignByDeviceIds)

    selector: CampaignSelector | None = None
    device_ids: CampaignDeviceIds | None = None


class ResumeIn(msgspec.Struct, forbid_unknown_fields=True):
    """New gates for a halted campaign, or `ignore_failures: true`; the whole body may be left out."""

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
    skipped: int
    queued: int
    pending: int
    acked: int
    failed: int
    expired: int
    cancelled: int
    #: with ``success_when``: devices that matched it after the ack; without: the acks
    succeeded: int
    pushed: int
    push_failed: int
    push_skipped: int
    fcm_configured: bool = False


class RolloutProfileOut(msgspec.Struct):
    """What a profile rollout moves: the profile from one version to the next (`from_version` null: new)."""

    name: str
    from_version: int | None
    to_version: int
    #: how long a released device has to report compliant with its new effective hash
    grace_seconds: int


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
    success_when: str | None = None
    outcome_timeout_seconds: int | None = None
    #: the scope of the key that created it (its targets are inside it); null: created unscoped
    scope: str | None = None
    #: `command` (one command to many devices) or `profile` (a profile rollout: no command, `profile` says what)
    kind: Literal["command", "profile"] = "command"
    profile: RolloutProfileOut | None = None


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
