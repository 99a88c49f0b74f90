"""A device's profile compliance as SQL: the one definition that selectors, counts and reads share.

The state is stored on the device (``devices.compliance_state``, ``devices.compliance_reasons``) where it
changes (``core.profiles``), so that a count or a selector reads one column of ``devices``, never the
status reports:

- ``compliant``: no profile matches the device (nothing is asked of it), or its report on its current
  effective hash is compliant (as the server verified it);
- ``noncompliant``: that report is noncompliant, or the grace (``NEXMDM_PROFILE_GRACE_SECONDS``) after
  its effective hash changed is over and it has reported on an older hash, or still reports items pending
  (reason ``PENDING``);
- ``pending``: its effective hash changed within the grace and it has not reported compliant on it yet;
- ``unknown``: past the grace and it never reported at all.

A new effective hash makes the device ``pending`` (``core.profiles.effective``), a status report (or the
sweep's judgement after an inventory change) stores the judged state, and the maintenance leader's
profile sweep ends the grace (``core.profiles.grace``): a pending device stays ``pending`` until that
round, at most one sweep interval past its grace.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_

from core.base.settings import Settings
from core.models import Device

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


def state_expr() -> ColumnElement[str]:
    """``compliant``, ``noncompliant``, ``pending`` or ``unknown`` of the outer query's device."""
    return Device.__table__.c.compliance_state


def clause(name: str, op: str, values: tuple[str, ...], settings: Settings, now: datetime) -> ColumnElement[bool]:
    """The SQL of a ``@compliance`` or ``@noncompliant(REASON)`` term (``settings`` and ``now``: the
    signature of every time-aware term; the stored state needs neither)."""
    if name == NONCOMPLIANT:
        return noncompliant_clause(values[0])
    return compliance_clause(op, values)


def compliance_clause(op: str, values: tuple[str, ...]) -> ColumnElement[bool]:
    """``@compliance = != in notin``."""
    state = state_expr()
    if op == "=":
        return state == values[0]
    if op == "in":
        return state.in_(values)
    if op == "!=":
        return state != values[0]
    return state.not_in(values)


def noncompliant_clause(reason: str) -> ColumnElement[bool]:
    """``@noncompliant(REASON)``: noncompliant now, with that reason among its reasons."""
    return and_(Device.compliance_state == "noncompliant", Device.compliance_reasons.like(f"%,{reason},%"))
