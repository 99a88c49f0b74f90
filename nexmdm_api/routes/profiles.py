"""Profiles: operators write versioned documents (``/v1/profiles``), viewers read them, a device fetches its
effective profile (``GET /v1/profile``, ETag/304) and reports its status (``POST /v1/profile/status``);
admins read a device's effective profile and compliance, and the fleet's compliance (docs/profiles.md).

Profiles reach the whole fleet: a scoped key may read a device's effective profile and compliance within
its scope, but cannot write profiles (403 ``out_of_scope``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response
from litestar.params import JSONBody, Parameter

from core.campaigns import profile_release, profile_rollouts
from core.profiles import compliance, effective, store
from core.profiles.document import MAX_BYTES
from nexmdm_api.auth import DEVICE_SECURITY, admin_actor, admin_route, require_device, scope_of
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.openapi import DeviceIdPath, allow
from nexmdm_api.routes.base import delete, get, post
from nexmdm_api.routes.inventory import Selector
from nexmdm_api.schemas import convert
from nexmdm_api.schemas_profiles import (
    AppliedOut,
    ComplianceOut,
    DeletedOut,
    DeviceComplianceOut,
    DeviceProfileOut,
    EffectiveKey,
    EffectiveOut,
    HistoryOut,
    PlanOut,
    ProfileApplyIn,
    ProfileIn,
    ProfileList,
    ProfileOut,
    RollbackIn,
    StatusIn,
    StatusOut,
    VersionRow,
)
from nexmdm_api.scoping import device_in_scope

NamePath = Annotated[str, Parameter(description="the profile's name", max_length=63)]
_WRITE = problems(400, 401, 403, 409, 413, 415, 422, 429)


class ProfileController(Controller):
    """Profiles as versioned documents."""

    path = "/v1/profiles"
    tags = ["admin"]
    allowed = allow(path)

    @get(
        "/",
        summary="Profiles, lowest priority first",
        **admin_route("viewer", readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_profiles(self, db: DB) -> ProfileList:
        return convert({"items": store.list_profiles(db)}, ProfileList)

    @post(
        "/",
        summary="Apply a profile document",
        description=(
            "A new immutable version when the content changed (`changed: false` and nothing written when it did "
            "not); audited with its per-key diff. A tie (another profile at the same priority setting a key this "
            "one sets) is 409. The effective profiles of the devices it matched or matches move at once; with "
            "`rollout` they move wave by wave instead (a profile rollout: a campaign of kind `profile` in "
            "`/v1/campaigns`, answered as `rollout`). A new version ends the profile's earlier rollout."
        ),
        status_code=200,
        request_max_body_size=MAX_BYTES,
        **admin_route("operator", body="json"),
        responses=_WRITE,
    )
    def apply_profile(self, request: Request[Any, Any, Any], db: DB, data: JSONBody[ProfileApplyIn]) -> AppliedOut:
        body = msgspec.to_builtins(data)
        rollout = body.pop("rollout", None)
        settings = request.app.state.settings
        applied = profile_rollouts.apply(db, settings, body, admin_actor(request), rollout)
        return convert(applied, AppliedOut)

    @post(
        "/plan",
        summary="What applying a profile document would do",
        description="Per key old -> new, how many devices' effective profile changes, and ties; writes nothing.",
        status_code=200,
        request_max_body_size=MAX_BYTES,
        **admin_route("operator", readonly=True, body="json"),
        responses=problems(400, 401, 403, 413, 415, 422, 429),
    )
    def plan_profile(self, request: Request[Any, Any, Any], db: DB, data: JSONBody[ProfileIn]) -> PlanOut:
        return convert(store.plan(db, request.app.state.settings, msgspec.to_builtins(data)), PlanOut)


class ProfileNameController(Controller):
    """One profile: its versions, history, rollback and deletion."""

    path = "/v1/profiles/{name:str}"
    tags = ["admin"]
    allowed = allow(path)

    @get(
        "/",
        summary="A profile's current (or given) version",
        **admin_route("viewer", readonly=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def get_profile(
        self,
        db: DB,
        name: NamePath,
        version: Annotated[int | None, Parameter(description="a version number", ge=1, le=2**31 - 1)] = None,
    ) -> ProfileOut:
        return convert(store.show(db, name, version), ProfileOut)

    @get(
        "/history",
        summary="A profile's versions, newest first",
        **admin_route("viewer", readonly=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def profile_history(self, db: DB, name: NamePath) -> HistoryOut:
        return HistoryOut(name=name, items=[convert(v, VersionRow) for v in store.history(db, name)])

    @post(
        "/rollback",
        summary="Make an old version's content current again",
        description="A new version with the content of `to_version` (nothing written when that is the current one).",
        status_code=200,
        **admin_route("operator", body="json"),
        responses=problems(400, 401, 403, 404, 409, 413, 415, 422, 429),
    )
    def rollback_profile(
        self, request: Request[Any, Any, Any], db: DB, name: NamePath, data: JSONBody[RollbackIn]
    ) -> AppliedOut:
        applied = profile_rollouts.rollback(db, request.app.state.settings, name, data.to_version, admin_actor(request))
        return convert(applied, AppliedOut)

    @delete(
        "/",
        summary="Delete a profile",
        description="Its devices lose its keys at once; its versions are kept (applying it again continues them).",
        status_code=200,
        **admin_route("operator"),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def delete_profile(self, request: Request[Any, Any, Any], db: DB, name: NamePath) -> DeletedOut:
        return convert(profile_rollouts.delete(db, request.app.state.settings, name, admin_actor(request)), DeletedOut)


class DeviceEffectiveController(Controller):
    """A device's effective profile and compliance, for admins."""

    path = "/v1/devices/{device_id:str}"
    tags = ["admin"]

    @get(
        "/effective-profile",
        summary="A device's effective profile, key by key",
        description="Each key with the profile and version it came from and the lower layers it overrides.",
        **admin_route("viewer", scoped=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def effective_profile(self, request: Request[Any, Any, Any], db: DB, device_id: DeviceIdPath) -> EffectiveOut:
        device = device_in_scope(request, db, device_id)
        view = effective.view(db, request.app.state.settings, device)
        return EffectiveOut(
            device_id=device,
            effective_hash=view["effective_hash"],
            document=view["document"],
            keys=[convert(k, EffectiveKey) for k in view["keys"]],
        )

    @get(
        "/compliance",
        summary="A device's compliance",
        description="compliant, noncompliant (with reasons), pending (within NEXMDM_PROFILE_GRACE_SECONDS) or unknown.",
        **admin_route("viewer", scoped=True, readonly=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def device_compliance(
        self, request: Request[Any, Any, Any], db: DB, device_id: DeviceIdPath
    ) -> DeviceComplianceOut:
        device = device_in_scope(request, db, device_id)
        return convert(compliance.device_compliance(db, request.app.state.settings, device), DeviceComplianceOut)


class ComplianceController(Controller):
    """The fleet's compliance."""

    path = "/v1/compliance"
    tags = ["admin"]

    @get(
        "/",
        summary="Devices per compliance state",
        description="Optionally grouped by profile, reason (noncompliant devices per reason) or model.",
        **admin_route("viewer", scoped=True, readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def fleet_compliance(
        self,
        request: Request[Any, Any, Any],
        db: DB,
        selector: Selector = None,
        by: Annotated[
            Literal["state", "profile", "reason", "model"], Parameter(description="how to group the counts")
        ] = "state",
    ) -> ComplianceOut:
        settings = request.app.state.settings
        summary = compliance.summary(db, settings, selector=selector, by=by, scope=scope_of(request))
        return convert(summary, ComplianceOut)


class DeviceProfileController(Controller):
    """The calling device's effective profile and its status reports."""

    path = "/v1/profile"
    tags = ["device"]

    @get(
        "/",
        summary="The device's effective profile",
        description=(
            "`ETag` is the effective hash: with `If-None-Match` naming it the answer is 304 without a body. "
            "`effective_hash` is null when no profile matches the device."
        ),
        security=DEVICE_SECURITY,
        opt={"auth": "device"},
        responses=problems(401, 429),
    )
    def get_profile(self, request: Request[Any, Any, Any], db: DB) -> Response[DeviceProfileOut | None]:
        device = require_device(request, db)
        effective.refresh_device(db, request.app.state.settings, device.id)
        db.refresh(device, ["effective_hash"])
        digest = device.effective_hash
        etag = f'"{digest or "none"}"'
        if request.headers.get("if-none-match", "").strip() in (etag, digest or "none"):
            return Response(None, status_code=304, headers={"ETag": etag})
        document = None if digest is None else effective.document_of(db, digest)
        return Response(DeviceProfileOut(effective_hash=digest, document=document), headers={"ETag": etag})

    @post(
        "/status",
        summary="Report how the device applied its effective profile",
        description=(
            "Per item (`apps/PACKAGE`, `settings/KEY`, `agent`, `os`, `heartbeat_seconds`): compliant, noncompliant "
            "(with the Android Management API's reason) or pending. The server also judges app, agent and OS "
            "items from the reported inventory; where they disagree its judgement wins and the item says so. "
            "409 `profile_not_current` when `effective_hash` is not the device's; the same report again changes "
            "nothing."
        ),
        status_code=200,
        security=DEVICE_SECURITY,
        opt={"auth": "device", "body": "json"},
        request_max_body_size=MAX_BYTES,
        responses=problems(400, 401, 409, 413, 415, 422, 429),
    )
    def report_status(self, request: Request[Any, Any, Any], db: DB, data: JSONBody[StatusIn]) -> StatusOut:
        device = require_device(request, db)
        judged = compliance.report(db, request.app.state.settings, device, msgspec.to_builtins(data))
        profile_release.check_device(db, device.id)  # a released device of a profile rollout succeeds at once
        return convert(judged, StatusOut)
