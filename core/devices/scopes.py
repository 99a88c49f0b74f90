"""Scopes: a selector that limits every device an admin principal reaches, ANDed into the SQL.

A principal (an admin key, a console session) carries ``scope: str | None``; ``None`` is the whole fleet.
The scope is written in the selector grammar (``store=42``) and compiled by the one selector compiler,
:mod:`core.devices.selectors`; every query over ``devices`` made for a scoped principal goes through
:func:`restrict` (or :func:`scope_clause` where a query is built otherwise), so a request's own selector
is ANDed with the scope in SQL and can never reach past it. A device outside the scope is
``NotFound``, exactly as an unknown one (:func:`require_device_in_scope`).

The scope keeps revoked devices that match it (an operator of store 42 still sees store 42's revoked
devices); a selector never matches revoked devices, whatever the scope.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, select, true
from sqlalchemy.orm import Session

from core.base.errors import InvalidArgument, NotFound, OutOfScope
from core.base.settings import Settings
from core.devices import selectors
from core.models import Device

#: fields a scope may not name. A device's state, compliance, battery, power and network change by themselves,
#: and its lost mode, its apps and its agent's version by commands the scoped principal may send (lost mode,
#: installs): either would move devices in and out of the scope without an unscoped admin acting. A scope
#: names labels (which a scoped principal cannot change, ``check_label_change``) and what the hardware and its
#: system report (``@model``, ``@manufacturer``, ``@os_version``, ``@api_level``, ``@security_patch``).
_UNSCOPABLE_FIELDS = (
    "@state",
    "@compliance",
    "@noncompliant",
    "@battery_pct",
    "@plugged",
    "@network_type",
    "@lost",
    "@app",
    "@agent_version",
)

_Q = TypeVar("_Q", bound=Select[*tuple[Any, ...]])


def check_scope(text: str | None) -> str | None:
    """A scope given when a key (or a person) is created, normalized; ``None`` for the whole fleet."""
    if text is None:
        return None
    try:
        parsed = selectors.parse(text)
    except selectors.InvalidSelector as exc:
        raise InvalidArgument(f"scope: {exc.message}", field="scope") from None
    if parsed.is_all:
        raise InvalidArgument("a scope selects part of the fleet (omit it for the whole fleet)", field="scope")
    for term in parsed.terms:
        if term.name in _UNSCOPABLE_FIELDS:
            raise InvalidArgument(
                f"a scope cannot use {term.name}: it changes by itself or by the scope's own commands "
                "(a scope names labels, @model, @manufacturer, @os_version, @api_level or @security_patch)",
                field="scope",
            )
    text = canonical(parsed)
    if len(text) > selectors.MAX_LENGTH:  # "k in(a)" is spelled "k in (a)": a little longer
        raise InvalidArgument(f"a scope is at most {selectors.MAX_LENGTH} characters once normalized", field="scope")
    return text


_WORD = re.compile(r"[A-Za-z0-9._:/-]*")


def _value(value: str) -> str:
    return value if _WORD.fullmatch(value) else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def canonical(selector: selectors.Selector) -> str:
    """One spelling per scope (``store = 42`` and ``store=42`` are one scope): the campaigns of a scope are
    found by this text. Only for what ``check_scope`` lets through: ``@app(PACKAGE)`` and
    ``@noncompliant(REASON)``, whose argument this spelling would lose, are refused before."""
    parts = []
    for term in selector.terms:
        if term.op == "exists":
            parts.append(term.name)
        elif term.op == "!":
            parts.append("!" + term.name)
        elif term.op in ("in", "notin"):
            parts.append(f"{term.name} {term.op} ({','.join(_value(v) for v in term.values)})")
        else:
            parts.append(f"{term.name}{term.op}{_value(term.values[0])}")
    return ",".join(parts)


def scope_clause(scope: str | None, settings: Settings, now: datetime | None = None) -> ColumnElement[bool]:
    """The SQL condition on ``devices`` that a scope means (``true()`` for the whole fleet)."""
    if scope is None:
        return true()
    return selectors.terms_clause(selectors.parse(scope), settings, now)


def restrict(query: _Q, scope: str | None, settings: Settings, now: datetime | None = None) -> _Q:
    """The one line every device query of a scoped principal goes through: ``query AND scope``.

    ``query`` must select from ``devices`` (or join it): the condition names ``devices`` columns.
    """
    if scope is None:
        return query
    return query.where(scope_clause(scope, settings, now))


def scoped_ids(scope: str | None, settings: Settings) -> Select[Any]:
    """``SELECT devices.id`` of the devices inside a scope, for ``IN (...)`` on tables keyed by device."""
    return restrict(select(Device.id), scope, settings)


def require_device_in_scope(db: Session, device_id: str, scope: str | None, settings: Settings) -> None:
    """``NotFound`` for a device outside the scope, worded as for a device that does not exist."""
    if scope is None:
        return
    found = db.execute(restrict(select(Device.id).where(Device.id == device_id), scope, settings)).first()
    if found is None:
        raise NotFound(f"no device {device_id!r}")


def check_label_change(scope: str | None, keys: Iterable[str]) -> None:
    """A scoped principal may not set or remove a label its scope is defined by: that would move a device
    out of its scope (or another device into a scope it does not own)."""
    if scope is None:
        return
    owned = {term.name for term in selectors.parse(scope).terms}
    touched = sorted(owned.intersection(keys))
    if touched:
        raise OutOfScope(f"the label {touched[0]!r} defines this key's scope ({scope}); it cannot change it")
