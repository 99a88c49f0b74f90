"""``POST /v1/enroll``: a device presents an enrollment token and receives its device token."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request
from litestar.params import JSONBody

from core.base.errors import InvalidCredentials
from core.enrollment import enroll as enrollment
from nexmdm_api.auth import ENROLLMENT_SECURITY, enrollment_refused, require_enrollment_secret
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.routes.base import post
from nexmdm_api.schemas import EnrollIn, EnrollOut


class EnrollController(Controller):
    """A device enrolls with an enrollment token."""

    path = "/v1/enroll"
    tags = ["device"]

    @post(
        "/",
        summary="Enroll a device",
        description=(
            "Takes one use of the enrollment token and returns the device token and a one-time `enrollment_secret` "
            "(both shown once). A retry after a lost answer (the same unexpired token and device, within 10 minutes, "
            "before the device's first heartbeat) returns fresh ones without taking another use only when it sends "
            "that `enrollment_secret`; otherwise it is 409 like any enrolled device. An enrolled, unrevoked device is "
            "409 unless `current_device_token` is its current token, in which case its token rotates and the old one "
            "stops working. A revoked device id enrolls again as a new generation that sees none of the old one's "
            "commands, acks or pushes."
        ),
        status_code=201,
        security=ENROLLMENT_SECURITY,
        opt={"auth": "enrollment", "body": "json"},
        responses=problems(400, 401, 409, 413, 415, 422, 429),
    )
    def enroll(self, request: Request[Any, Any, Any], db: DB, data: JSONBody[EnrollIn]) -> EnrollOut:
        secret = require_enrollment_secret(request)
        try:
            result = enrollment.enroll_device(
                db,
                enrollment_secret=secret,
                device_id=data.device_id,
                fcm_token=data.fcm_token,
                model=data.model,
                os_version=data.os_version,
                agent_version=data.agent_version,
                current_device_token=data.current_device_token,
                retry_secret=data.enrollment_secret,
            )
        except InvalidCredentials as exc:
            raise enrollment_refused(request, exc) from None
        return EnrollOut(
            device_id=result["device_id"],
            device_token=result["device_token"],
            enrollment_secret=result["enrollment_secret"],
        )
