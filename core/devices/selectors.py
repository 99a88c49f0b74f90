"""Selectors: Kubernetes' label-selector grammar plus ``@`` device fields, parsed and compiled to SQL.

::

    selector := "" | "all" | term ("," term)*
    term     := key | "!" key | key ("=" | "==" | "!=") value | key ("in" | "notin") "(" value ("," value)* ")"
              | "@" field op value | "@" field ("in" | "notin") "(" values ")"
              | "@app(" package ")" [op version_code] | "!@app(" package ")" | "@noncompliant(" REASON ")"
    value    := word | '"' text '"'

Null and absent follow Kubernetes: ``!=``, ``notin`` and ``!key`` match devices that lack the label or
field; ``=``, ``in`` and comparisons never do. Revoked devices never match. The reported inventory adds
``@app(PACKAGE)``, ``!@app(PACKAGE)``, ``@app(PACKAGE) op VERSION_CODE``, ``@api_level``, ``@security_patch``
(a date) and ``@manufacturer`` (any case): ``core.devices.inventory_terms``; compliance ``@compliance`` and
``@noncompliant(REASON)``: ``core.devices.compliance_terms``. A selector that does not parse
raises :class:`InvalidSelector` with the position (0-based, in characters) and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, true
from sqlalchemy.sql import Select

from core.base.errors import InvalidArgument
from core.base.labels import KEY_RE, VALUE_RE
from core.base.settings import Settings
from core.base.validation import PACKAGE_RE
from core.base.versions import version_key
from core.devices import compliance_terms, inventory_terms, state_terms
from core.models import NETWORK_TYPES, Device, DeviceLabel
from core.storage.types import utcnow

MAX_LENGTH = 1024
#: C0 and C1 controls, DEL and bidi overrides: never part of a selector (a NUL in a quoted value was a 500
#: on PostgreSQL, an ESC sequence was stored and written to an operator's terminal; issue #21)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_TERMS = 32
MAX_VALUES = 64
STATES = state_terms.STATES
EQUALITY = ("=", "==", "!=")
ORDERING = ("<", "<=", ">", ">=")
#: field -> (column, allowed values or None, ordering allowed)
FIELDS: dict[str, tuple[Any, tuple[str, ...] | None, bool]] = {
    "state": (None, STATES, False),
    "agent_version": (Device.agent_version, None, True),
    "model": (Device.model, None, False),
    "os_version": (Device.os_version, None, False),
    "network_type": (Device.last_network_type, NETWORK_TYPES, False),
    "battery_pct": (Device.last_battery_pct, None, True),
    "plugged": (Device.last_plugged, ("true", "false"), False),
    # in lost mode (``device_lost_mode``, ``core.devices.locations``): never null, a device is in it or not
    "lost": (None, ("true", "false"), False),
    **{name: (column, None, name != "manufacturer") for name, column in inventory_terms.COLUMNS.items()},
    "compliance": (None, compliance_terms.STATES, False),
}
INVENTORY_FIELDS = tuple(inventory_terms.COLUMNS)  #: a device that never reported has none of them
#: ``@app(PACKAGE)``: installed; with an operator, a comparison of its version code
APP_FIELD = "@app"


class InvalidSelector(InvalidArgument):
    """The selector does not parse, or names an unknown field or value."""

    code = "invalid_selector"

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"invalid selector at position {position}: {message}", field="selector")
        self.position = position


@dataclass(frozen=True)
class Term:
    #: a label key, or a field name starting with "@"
    name: str
    #: "exists", "!", "=", "!=", "in", "notin", "<", "<=", ">", ">="
    op: str
    values: tuple[str, ...] = ()
    position: int = 0


@dataclass(frozen=True)
class Selector:
    text: str
    terms: tuple[Term, ...]

    @property
    def is_all(self) -> bool:
        return not self.terms


_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)|(?P<op>==|!=|<=|>=|=|<|>|!)|(?P<punct>[(),])|(?P<field>@[A-Za-z_]*)"""
    r"""|(?P<string>"(?:[^"\\]|\\.)*")|(?P<word>[A-Za-z0-9._:/-]+)"""
)


@dataclass(frozen=True)
class _Token:
    kind: str  # op, punct, field, string, word, end
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            if text[pos] == '"':
                raise InvalidSelector("unterminated quoted value", pos)
            raise InvalidSelector(f"unexpected character {text[pos]!r}", pos)
        kind = match.lastgroup or "word"
        if kind != "ws":
            value = match.group()
            if kind == "string":
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            tokens.append(_Token(kind, value, pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _describe(token: _Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.token
        self.index += 1
        return token

    def fail(self, expected: str) -> InvalidSelector:
        return InvalidSelector(f"expected {expected}, got {_describe(self.token)}", self.token.position)

    def value(self, name: str) -> str:
        token = self.token
        if token.kind not in ("word", "string") or token.text in ("in", "notin") and token.kind == "word":
            raise self.fail(f"a value for {name}")
        self.take()
        return token.text

    def values(self, name: str) -> tuple[str, ...]:
        if self.token.text != "(" or self.token.kind != "punct":
            raise self.fail("'(' after in/notin")
        self.take()
        out = [self.value(name)]
        while self.token.kind == "punct" and self.token.text == ",":
            self.take()
            out.append(self.value(name))
        if not (self.token.kind == "punct" and self.token.text == ")"):
            raise self.fail("',' or ')'")
        self.take()
        if len(out) > MAX_VALUES:
            raise InvalidSelector(f"at most {MAX_VALUES} values in one in/notin", self.token.position)
        return tuple(out)

    def term(self) -> Term:
        start = self.token
        if start.kind == "op" and start.text == "!":
            return self.lacking(start)
        if start.kind == "field":
            self.take()
            return self.field_term(start)
        if start.kind != "word":
            raise self.fail("a label key, '!key' or an @field")
        self.take()
        key = _key(start)
        op = self.token
        if op.kind == "op" and op.text in EQUALITY:
            self.take()
            if self.token.kind in ("punct", "end") and self.token.text in (",", ""):
                return Term(key, "!=" if op.text == "!=" else "=", ("",), start.position)  # key= : empty value
            value = self.value(key)
            if not VALUE_RE.fullmatch(value):
                raise InvalidSelector(
                    f"label value {value!r} must be 0-63 characters from A-Z a-z 0-9 . _ : -", op.position + 1
                )
            return Term(key, "!=" if op.text == "!=" else "=", (value,), start.position)
        if op.kind == "word" and op.text in ("in", "notin"):
            self.take()
            values = self.values(key)
            for value in values:
                if not VALUE_RE.fullmatch(value):
                    raise InvalidSelector(f"label value {value!r} is not a valid label value", op.position)
            return Term(key, op.text, values, start.position)
        if op.kind in ("end",) or (op.kind == "punct" and op.text == ","):
            return Term(key, "exists", (), start.position)
        raise self.fail("'=', '!=', 'in', 'notin', ',' or the end")

    def lacking(self, start: _Token) -> Term:
        """``!key`` or ``!@app(PACKAGE)``."""
        self.take()
        lacking = self.token
        if lacking.kind == "field" and lacking.text == APP_FIELD:
            self.take()
            return Term(APP_FIELD, "!", (self.package(),), start.position)
        if lacking.kind != "word":
            raise self.fail("a label key after '!'")
        self.take()
        return Term(_key(lacking), "!", (), start.position)

    def package(self) -> str:  # ``(PACKAGE)`` after ``@app``
        if not (self.token.kind == "punct" and self.token.text == "("):
            raise self.fail("'(' after @app")
        self.take()
        token = self.token
        if token.kind != "word" or len(token.text) > 255 or not PACKAGE_RE.fullmatch(token.text):
            raise self.fail("a package name such as com.acme.pos")
        self.take()
        if not (self.token.kind == "punct" and self.token.text == ")"):
            raise self.fail("')' after the package name")
        self.take()
        return token.text

    def app_term(self, start: _Token) -> Term:
        package = self.package()
        op = self.token
        if op.kind == "op" and op.text in (*EQUALITY, *ORDERING) and op.text != "!":
            self.take()
            value = self.value(f"@app({package})")
            if not value.isdigit() or len(value) > 19 or int(value) > 2**63 - 1:
                raise InvalidSelector(
                    f"@app({package}) compares a version code, a whole number (got {value!r})", op.position
                )
            return Term(APP_FIELD, {"==": "="}.get(op.text, op.text), (package, value), start.position)
        return Term(APP_FIELD, "exists", (package,), start.position)

    def field_term(self, start: _Token) -> Term:
        name = start.text[1:]
        if start.text == APP_FIELD:
            return self.app_term(start)
        if start.text == compliance_terms.NONCOMPLIANT:
            return Term(start.text, "exists", (compliance_terms.reason_argument(self),), start.position)
        if name not in FIELDS:
            raise InvalidSelector(
                f"unknown field {start.text!r} (fields: {', '.join('@' + f for f in FIELDS)}, @app(PACKAGE))",
                start.position,
            )
        _, allowed, ordered = FIELDS[name]
        op = self.token
        if op.kind == "op" and (op.text in EQUALITY or (ordered and op.text in ORDERING)):
            self.take()
            values: tuple[str, ...] = (self.value(start.text),)
            kind = {"==": "="}.get(op.text, op.text)
        elif op.kind == "word" and op.text in ("in", "notin"):
            self.take()
            values = self.values(start.text)
            kind = op.text
        else:
            expected = "'=', '!=', '<', '<=', '>', '>=', 'in' or 'notin'" if ordered else "'=', '!=', 'in' or 'notin'"
            raise self.fail(f"{expected} after {start.text}")
        for value in values:
            _check_field_value(name, value, kind, allowed, op.position)
        return Term(start.text, kind, values, start.position)


def _key(token: _Token) -> str:
    if token.text in ("in", "notin", "all") or not KEY_RE.fullmatch(token.text):
        raise InvalidSelector(
            f"{token.text!r} is not a label key (1-63 of a-z 0-9 . _ -, starting and ending with a letter or digit, "
            "optional prefix/)",
            token.position,
        )
    return token.text


def _check_field_value(name: str, value: str, op: str, allowed: tuple[str, ...] | None, position: int) -> None:
    if allowed is not None and value not in allowed:
        raise InvalidSelector(f"@{name} is one of {', '.join(allowed)} (got {value!r})", position)
    if name == "battery_pct" and not (value.isdigit() and 0 <= int(value) <= 100):
        raise InvalidSelector(f"@battery_pct is an integer 0-100 (got {value!r})", position)
    if (problem := inventory_terms.value_problem(name, value)) is not None:
        raise InvalidSelector(problem, position)
    if name == "agent_version" and op in ORDERING and version_key(value) is None:
        raise InvalidSelector(f"@agent_version {op} needs a version such as 2.1.0 (got {value!r})", position)
    if len(value) > 128:
        raise InvalidSelector("a value is at most 128 characters", position)


def parse(text: str | None) -> Selector:
    """Parse a selector; the empty selector and ``all`` select every (unrevoked) device."""
    text = text or ""
    if len(text.encode()) > MAX_LENGTH:
        raise InvalidSelector(f"a selector is at most {MAX_LENGTH} bytes", MAX_LENGTH)
    control = _CONTROL_RE.search(text)
    if control is not None:
        raise InvalidSelector(f"control character U+{ord(control.group()):04X} is not allowed", control.start())
    if text.strip() in ("", "all"):
        return Selector(text.strip(), ())
    parser = _Parser(text)
    terms = [parser.term()]
    while parser.token.kind == "punct" and parser.token.text == ",":
        parser.take()
        terms.append(parser.term())
    if parser.token.kind != "end":
        raise parser.fail("',' or the end")
    if len(terms) > MAX_TERMS:
        raise InvalidSelector(f"at most {MAX_TERMS} terms", terms[MAX_TERMS].position)
    return Selector(text.strip(), tuple(terms))


# ------------------------------------------------------------------------------------------ SQL


def _has_label(key: str, values: tuple[str, ...] | None = None) -> ColumnElement[bool]:
    query = select(DeviceLabel.device_id).where(DeviceLabel.device_id == Device.id, DeviceLabel.key == key)
    if values is not None:
        query = query.where(DeviceLabel.value.in_(values) if len(values) > 1 else DeviceLabel.value == values[0])
    # correlated to the outer query's device only: an outer query that reads device_labels itself (label
    # counts within a scope) keeps its own rows, and this subquery its own
    return exists(query.correlate_except(DeviceLabel))


def _field(term: Term, settings: Settings, now: datetime) -> ColumnElement[bool]:
    name = term.name[1:]
    if name == "lost":
        return state_terms.lost_clause(term.op, term.values)
    if term.name == APP_FIELD:
        return inventory_terms.app_clause(term.op, term.values)
    if name in INVENTORY_FIELDS:
        return inventory_terms.field_clause(name, term.op, term.values)
    if name == "state":
        return state_terms.state_clause(term.op, term.values, settings, now)
    column: ColumnElement[Any] = FIELDS[name][0]
    values: list[Any] = list(term.values)
    if name == "battery_pct":
        values = [int(v) for v in values]
    elif name == "plugged":
        values = [v == "true" for v in values]
    if term.op in ORDERING:
        if name == "agent_version":
            column, values = Device.agent_version_key.expression, [version_key(values[0])]
        compared: dict[str, ColumnElement[bool]] = {
            "<": column < values[0],
            "<=": column <= values[0],
            ">": column > values[0],
            ">=": column >= values[0],
        }
        return compared[term.op]
    if term.op == "=":
        equal: ColumnElement[bool] = column == values[0]
        return equal
    if term.op == "in":
        return column.in_(values)
    if term.op == "!=":
        return or_(column.is_(None), column != values[0])
    return or_(column.is_(None), column.not_in(values))


def term_clause(term: Term, settings: Settings, now: datetime) -> ColumnElement[bool]:
    if term.name in (compliance_terms.NONCOMPLIANT, "@compliance"):
        return compliance_terms.clause(term.name, term.op, term.values, settings, now)
    if term.name.startswith("@"):
        return _field(term, settings, now)
    if term.op == "exists":
        return _has_label(term.name)
    if term.op == "!":
        return ~_has_label(term.name)
    if term.op in ("=", "in"):
        return _has_label(term.name, term.values)
    return ~_has_label(term.name, term.values)


def where_clause(selector: Selector, settings: Settings, now: datetime | None = None) -> ColumnElement[bool]:
    """The SQL condition on ``devices`` that the selector means (revoked devices excluded)."""
    return and_(Device.revoked_at.is_(None), terms_clause(selector, settings, now))


def terms_clause(selector: Selector, settings: Settings, now: datetime | None = None) -> ColumnElement[bool]:
    """The selector's terms alone, revoked devices included: ``nexmdm top`` counts the revoked devices whose
    labels and fields would match (a selector itself never picks a revoked device)."""
    now = now or utcnow()
    return and_(true(), *(term_clause(t, settings, now) for t in selector.terms))


def matching_ids(selector: Selector, settings: Settings, now: datetime | None = None) -> Select[Any]:
    """``SELECT devices.id`` of the matching devices."""
    return select(Device.id).where(where_clause(selector, settings, now))


def count_matching(db: Any, selector: Selector, settings: Settings) -> int:
    """How many (unrevoked) devices the selector matches now."""
    return int(db.execute(select(func.count()).select_from(matching_ids(selector, settings).subquery())).scalar_one())
