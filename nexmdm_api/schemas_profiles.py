"""The profile endpoints' bodies and answers (docs/profiles.md).

The document is declared here so that the OpenAPI document (and the generated client) knows its shape;
``core.profiles.document`` still checks every document, as it owns what JSON Schema cannot say (a package
listed once, a build that exists, a selector a profile may use). Either way a refusal is a 422 naming the
path, nothing written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from core.devices.compliance_terms import REASONS, STATES
from core.profiles.document import MAX_APPS, MAX_SETTINGS, PRIORITY_RANGE
from nexmdm_api.schemas import PAYLOAD_VALUE_REF, TEXT_PATTERN
from nexmdm_api.schemas_fleet import CampaignOut, Percent, SelectorText, WavePercent
from nexmdm_api.schemas_inventory import Hash, Package

NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
ProfileName = Annotated[str, Meta(max_length=63, pattern=NAME_PATTERN, description="the profile's name")]
SettingKey = Annotated[str, Meta(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
#: the reasons and states as enums in the OpenAPI document, from the one list in core.devices.compliance_terms
Reason = Literal[REASONS]  # type: ignore[valid-type]
State = Literal[STATES]  # type: ignore[valid-type]


#: an object of JSON values whose strings (keys too) hold no control characters, at any depth: the
#: document's ``PayloadValue`` component, the rule ``core.profiles.document`` checks
JsonObject = Annotated[
    dict[str, Any],
    Meta(
        extra_json_schema={
            "propertyNames": {"pattern": TEXT_PATTERN},
            "additionalProperties": {"$ref": PAYLOAD_VALUE_REF},
        }
    ),
]


class ProfileApp(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    package: Package
    install: Literal["required", "blocked", "available"]
    min_version_code: Annotated[int, Meta(gt=-1, le=2**63 - 1)] | None = None
    #: an APK build id (``nexmdm apk list``)
    build: Annotated[int, Meta(ge=1, le=2**31 - 1)] | None = None
    managed_config: JsonObject | None = None


class ProfileAgent(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    min_version: Annotated[str, Meta(max_length=64, pattern=r"^[0-9]+(\.[0-9]+){0,3}$")] | None = None


class ProfileOs(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    min_api_level: Annotated[int, Meta(ge=1, le=1000)] | None = None
    min_security_patch: Annotated[str, Meta(pattern=r"^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$")] | None = (
        None
    )


class ProfileIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A profile document (docs/profiles.md)."""

    name: ProfileName
    selector: SelectorText = ""
    priority: Annotated[int, Meta(ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1])] = 0
    apps: Annotated[list[ProfileApp], Meta(max_length=MAX_APPS)] = []
    agent: ProfileAgent | None = None
    os: ProfileOs | None = None
    settings: Annotated[
        dict[SettingKey, Any],
        Meta(max_length=MAX_SETTINGS, extra_json_schema={"additionalProperties": {"$ref": PAYLOAD_VALUE_REF}}),
    ] = {}
    heartbeat_seconds: Annotated[int, Meta(ge=10, le=86_400)] | None = None


#: a rollout's interval and grace: at most 30 days, in seconds
RolloutSeconds = Annotated[int, Meta(ge=0, le=30 * 86400)]


class _RolloutGates(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    #: the least time between two waves (a wave also waits for every released device's outcome)
    wave_interval_seconds: RolloutSeconds = 0
    #: the failure gate: past this share of released devices failed, the rollout halts
    max_noncompliant_pct: Percent | None = None
    #: how long a released device has to report compliant with its new hash (default
    #: `NEXMDM_PROFILE_GRACE_SECONDS`)
    grace_seconds: Annotated[int, Meta(ge=1, le=30 * 86400)] | None = None


RolloutWaveSize = Annotated[int, Meta(ge=1, le=2**31 - 1)]


class RolloutBySize(_RolloutGates, kw_only=True):
    """Waves of `wave_size` devices."""

    wave_size: RolloutWaveSize


class RolloutByPercent(_RolloutGates, kw_only=True):
    """Waves of `wave_percent` of the devices whose effective profile changes."""

    wave_percent: WavePercent


class RolloutIn(_RolloutGates, kw_only=True):
    """Waves for a profile change (docs/profiles.md): exactly one of `wave_percent` or `wave_size`."""

    #: the OpenAPI document shows exactly one of them (``oneOf``); core checks the rule
    openapi_variants: ClassVar[tuple[type[msgspec.Struct], ...]] = (RolloutBySize, RolloutByPercent)

    wave_percent: WavePercent | None = None
    wave_size: RolloutWaveSize | None = None


class ProfileApplyIn(ProfileIn, forbid_unknown_fields=True, omit_defaults=True):
    """A profile document, and optionally `rollout`: its waves (the document's own fields are unchanged)."""

    rollout: RolloutIn | None = None


class DiffRow(msgspec.Struct):
    key: str
    old: Any
    new: Any


class Tie(msgspec.Struct):
    profile: str
    priority: int
    keys: list[str]


class PlanOut(msgspec.Struct):
    name: str
    changed: bool
    new: bool
    diff: list[DiffRow]
    #: devices whose effective profile (its hash) changes
    devices_changing: int
    #: profiles at the same priority setting a key this one sets (applying would be 409)
    conflicts: list[Tie]


class AppliedOut(msgspec.Struct):
    name: str
    version: int
    #: false: the document equals the current version; nothing was written
    changed: bool
    diff: list[DiffRow]
    devices_changing: int
    #: the profile rollout (a campaign of kind `profile`) when applied with `rollout` and a device moves
    rollout: CampaignOut | None = None


class ProfileRow(msgspec.Struct):
    name: str
    version: int
    priority: int
    selector: str
    devices: int
    updated_at: datetime


class ProfileList(msgspec.Struct):
    items: list[ProfileRow]


class ProfileOut(msgspec.Struct):
    name: str
    version: int
    current_version: int
    deleted: bool
    sha256: str
    created_by: str
    created_at: datetime
    document: dict[str, Any]


class VersionRow(msgspec.Struct):
    version: int
    sha256: str
    created_by: str
    created_at: datetime
    changed_keys: list[str]


class HistoryOut(msgspec.Struct):
    name: str
    items: list[VersionRow]


class RollbackIn(msgspec.Struct, forbid_unknown_fields=True):
    to_version: Annotated[int, Meta(ge=1, le=2**31 - 1)]


class DeletedOut(msgspec.Struct):
    name: str
    deleted: bool
    version: int


class Source(msgspec.Struct):
    profile: str
    version: int
    value: Any


class EffectiveKey(msgspec.Struct):
    key: str
    value: Any
    profile: str
    version: int
    #: lower layers that set the key too, lowest first
    overrides: list[Source]


class EffectiveOut(msgspec.Struct):
    device_id: str
    effective_hash: str | None
    keys: list[EffectiveKey]
    document: dict[str, Any] | None


class DeviceProfileOut(msgspec.Struct):
    """``GET /v1/profile``: the calling device's effective profile (``null`` when no profile matches it)."""

    effective_hash: str | None
    document: dict[str, Any] | None


class StatusItem(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    key: Annotated[str, Meta(min_length=1, max_length=300, pattern=TEXT_PATTERN)]
    state: Literal["compliant", "noncompliant", "pending"]
    reason: Reason | None = None
    detail: Annotated[str, Meta(max_length=500, pattern=TEXT_PATTERN)] | None = None


class StatusIn(msgspec.Struct, forbid_unknown_fields=True):
    effective_hash: Hash
    items: Annotated[list[StatusItem], Meta(max_length=5000)] = []


class JudgedItem(msgspec.Struct, omit_defaults=True):
    key: str
    state: str
    #: true: the server judged the item from the reported inventory
    verified: bool
    reason: str | None = None
    detail: str | None = None
    #: what the device reported where the server's judgement differs (the server's wins)
    disagreement: dict[str, Any] | None = None


class StatusOut(msgspec.Struct):
    effective_hash: str
    state: str
    reasons: list[str]
    items: list[JudgedItem]


class DeviceComplianceOut(msgspec.Struct):
    device_id: str
    state: State
    reasons: list[str]
    effective_hash: str | None
    effective_since: datetime | None
    reported_hash: str | None
    reported_at: datetime | None
    items: list[JudgedItem]


class ComplianceGroup(msgspec.Struct):
    key: str
    states: dict[str, int]


class ComplianceOut(msgspec.Struct):
    selector: str
    total: int
    states: dict[str, int]
    by: Literal["state", "profile", "reason", "model"]
    groups: list[ComplianceGroup]
