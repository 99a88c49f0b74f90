"""A device's profile compliance as SQL: the one definition that selectors, counts and reads share.

The state is derived at read time from the device's ``effective_hash``/``effective_since`` and its last
status report (``device_compliance``), so that a grace period ends without anyone writing:

- ``compliant``: no profile matches the device (nothing is asked of it), or its report on its current
  effective hash is compliant (as the server verified it);
- ``noncompliant``: that report is noncompliant, or the grace (``NEXMDM_PROFILE_GRACE_SECONDS``) after
  its effective hash changed is over and it has reported on an older hash, or still reports items pending
  (reason ``PENDING``);
- ``pending``: its effective hash changed within the grace and it has not reported compliant on it yet;
- ``unknown``: past the grace and it never reported at all.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, literal, select

from core.base.settings import Settings
from core.models import Device, DeviceCompliance

#: the Android Management API's ``NonComplianceReason`` names that a status item may carry
REASONS = (
    "APP_NOT_INSTALLED",
    "APP_NOT_UPDATED",
    "APP_INSTALLED",
    "OS_NOT_PERMITTED",
    "API_LEVEL",
    "PENDING",
    "INVALID_VALUE",
    "USER_ACTION",
    "UNSUPPORTED",
    "DEVICE_INCOMPATIBLE",
)
STATES = ("compliant", "noncompliant", "pending", "unknown")
#: ``@noncompliant(REASON)``: noncompliant now, with that reason
NONCOMPLIANT = "@noncompliant"


def reason_argument(parser: Any) -> str:
    """``(REASON)`` after ``@noncompliant``, read with the selector parser (``core.devices.selectors``)."""
    if not (parser.token.kind == "punct" and parser.token.text == "("):
        raise parser.fail("'(' after @noncompliant")
    parser.take()
    token = parser.token
    if token.kind != "word" or token.text not in REASONS:
        raise parser.fail(f"a reason ({', '.join(REASONS)})")
    parser.take()
    if not (parser.token.kind == "punct" and parser.token.text == ")"):
        raise parser.fail("')' after the reason")
    parser.take()
    return str(token.text)


def _reported(column: Any) -> Any:
    return select(column).where(DeviceCompliance.device_id == Device.id).correlate(Device).scalar_subquery()


def state_expr(settings: Settings, now: datetime, *, joined: bool = False) -> ColumnElement[str]:
    """``compliant``, ``noncompliant``, ``pending`` or ``unknown`` of the outer query's device (``joined``:
    the query outer-joins ``device_compliance`` itself, cheaper than a subquery per row for counts)."""
    if joined:
        reported_hash, reported_state = DeviceCompliance.reported_hash, DeviceCompliance.state
    else:
        reported_hash, reported_state = _reported(DeviceCompliance.reported_hash), _reported(DeviceCompliance.state)
    grace = now - timedelta(seconds=settings.profile_grace_seconds)
    return case(
        (Device.effective_hash.is_(None), literal("compliant")),
        (and_(reported_hash == Device.effective_hash, reported_state != "pending"), reported_state),
        (Device.effective_since >= grace, literal("pending")),
        (reported_hash.is_(None), literal("unknown")),
        else_=literal("noncompliant"),
    )


def reasons_expr() -> ColumnElement[str]:
    """``,REASON,...,`` of the outer query's device: its report's, or ``,PENDING,`` when it has not
    reported on its current hash (or still reports items pending)."""
    reported_hash, reported_state = _reported(DeviceCompliance.reported_hash), _reported(DeviceCompliance.state)
    return case(
        (
            and_(reported_hash == Device.effective_hash, reported_state != "pending"),
            _reported(DeviceCompliance.reasons),
        ),
        else_=literal(",PENDING,"),
    )


def clause(name: str, op: str, values: tuple[str, ...], settings: Settings, now: datetime) -> ColumnElement[bool]:
    """The SQL of a ``@compliance`` or ``@noncompliant(REASON)`` term."""
    if name == NONCOMPLIANT:
        return noncompliant_clause(values[0], settings, now)
    return compliance_clause(op, values, settings, now)


def compliance_clause(op: str, values: tuple[str, ...], settings: Settings, now: datetime) -> ColumnElement[bool]:
    """``@compliance = != in notin``."""
    state = state_expr(settings, now)
    if op == "=":
        return state == values[0]
    if op == "in":
        return state.in_(values)
    if op == "!=":
        return state != values[0]
    return state.not_in(values)


def noncompliant_clause(reason: str, settings: Settings, now: datetime) -> ColumnElement[bool]:
    """``@noncompliant(REASON)``: noncompliant now, with that reason among its reasons."""
    return and_(state_expr(settings, now) == "noncompliant", reasons_expr().like(f"%,{reason},%"))
