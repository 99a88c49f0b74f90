"""The action catalogue: every action a command may carry, with its payload and result schemas.

The built-in actions (``core.commands.action_schemas``) are typed: a payload and a result are checked
against JSON Schema 2020-12 (``jsonschema``'s ``Draft202012Validator``) before anything is written. An
operator's own actions (``NEXMDM_ACTIONS``) are untyped (any JSON object) unless the file named by
``NEXMDM_ACTION_SCHEMAS`` gives them schemas::

    {"acme_kiosk": {"summary": "...", "payload_schema": {...}, "result_schema": {...},
                    "destructive": false, "least_role": "operator"}}
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from core.base import validation
from core.base.errors import InvalidArgument
from core.base.settings import Settings
from core.commands.action_schemas import BUILTIN, DIALECT, ERROR_CODES, UNTYPED
from core.models import ROLES

__all__ = ["ERROR_CODES", "Action", "Catalogue", "InvalidPayload", "InvalidResult", "catalogue_for", "is_destructive"]


class InvalidPayload(InvalidArgument):
    """A command's payload does not match its action's payload schema; nothing was written."""

    code = "invalid_payload"


class InvalidResult(InvalidArgument):
    """An ack's result does not match its action's result schema; the command stays pending."""

    code = "invalid_result"


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@dataclass(frozen=True)
class Action:
    name: str
    summary: str
    payload_schema: dict[str, Any]
    result_schema: dict[str, Any]
    destructive: bool = False
    least_role: str = "operator"
    #: built-in, or an operator's own action (``typed`` when a schema file describes it)
    builtin: bool = True
    typed: bool = True
    _validators: dict[str, Draft202012Validator] = field(default_factory=dict, compare=False, repr=False)

    def _check(self, kind: str, value: dict[str, Any], error: type[InvalidArgument]) -> None:
        schema = self.payload_schema if kind == "payload" else self.result_schema
        validator = self._validators.get(kind)
        if validator is None:
            validator = self._validators.setdefault(kind, _validator(schema))
        problem = best_match(validator.iter_errors(value))
        if problem is not None:
            path = problem.json_path
            where = kind + path[1:] if path != "$" else kind
            raise error(f"{self.name} {kind} at {path}: {problem.message}", field=where)

    def check_payload(self, payload: dict[str, Any] | None) -> None:
        """Raise :class:`InvalidPayload` naming the JSON path of the first problem (no payload counts as ``{}``)."""
        self._check("payload", {} if payload is None else payload, InvalidPayload)

    def check_result(self, result: dict[str, Any] | None) -> None:
        """Raise :class:`InvalidResult` naming the JSON path (no result counts as ``{}``)."""
        self._check("result", {} if result is None else result, InvalidResult)

    def stored_result(self, result: dict[str, Any] | None) -> dict[str, Any] | None:
        """What is kept of a valid result: a built-in action's declared fields only (agents may report more)."""
        if result is None or not self.builtin:
            return result
        declared = self.result_schema.get("properties", {})
        return {k: v for k, v in result.items() if k in declared}

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "destructive": self.destructive,
            "least_role": self.least_role,
            "builtin": self.builtin,
            "typed": self.typed,
            "payload_schema": self.payload_schema,
            "result_schema": self.result_schema,
        }


def _schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": DIALECT, **schema}


def builtin_actions() -> dict[str, Action]:
    return {
        name: Action(name, summary, _schema(payload), _schema(result), destructive, role)
        for name, (summary, payload, result, destructive, role) in BUILTIN.items()
    }


def _operator_action(name: str, entry: object, source: str) -> Action:
    if not isinstance(entry, dict):
        raise InvalidArgument(f"{source}: {name!r} must be an object", field="action_schemas")
    unknown = sorted(set(entry) - {"summary", "payload_schema", "result_schema", "destructive", "least_role"})
    if unknown:
        raise InvalidArgument(f"{source}: {name!r} has an unknown key {unknown[0]!r}", field="action_schemas")
    schemas = {}
    for kind in ("payload_schema", "result_schema"):
        schema = entry.get(kind, UNTYPED)
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise InvalidArgument(
                f"{source}: {name}.{kind} is not a JSON Schema: {exc.message}", field="action_schemas"
            ) from None
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise InvalidArgument(f'{source}: {name}.{kind} must say "type": "object"', field="action_schemas")
        schemas[kind] = {"$schema": DIALECT, **schema}
    role = entry.get("least_role", "operator")
    if role not in ROLES[1:]:
        raise InvalidArgument(f"{source}: {name}.least_role must be operator or admin", field="action_schemas")
    return Action(
        name,
        str(entry.get("summary", "an operator-defined action")),
        schemas["payload_schema"],
        schemas["result_schema"],
        bool(entry.get("destructive", False)),
        role,
        builtin=False,
        typed=True,
    )


def _read_schema_file(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidArgument(
            f"NEXMDM_ACTION_SCHEMAS: cannot read {path}: {exc.strerror}", field="action_schemas"
        ) from None
    except ValueError as exc:
        raise InvalidArgument(f"NEXMDM_ACTION_SCHEMAS: {path} is not JSON: {exc}", field="action_schemas") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"NEXMDM_ACTION_SCHEMAS: {path} must hold an object", field="action_schemas")
    return data


@dataclass(frozen=True)
class Catalogue:
    actions: dict[str, Action]

    def get(self, name: str) -> Action:
        """The action, or :class:`InvalidArgument` (422 at creation) naming the known ones."""
        validation.action(name)
        action = self.actions.get(name)
        if action is None:
            raise InvalidArgument(f"unknown action {name!r}; known actions: {', '.join(self.actions)}", field="action")
        return action

    def check_command(self, name: str, payload: dict[str, Any] | None) -> Action:
        """A command's action and payload, before anything is written: size and characters, then the schema."""
        action = self.get(name)
        validation.payload(payload)
        action.check_payload(payload)
        return action

    def names(self) -> tuple[str, ...]:
        return tuple(self.actions)


@functools.lru_cache(maxsize=16)
def _build(extra: tuple[str, ...], schema_file: str) -> Catalogue:
    actions = builtin_actions()
    described = _read_schema_file(schema_file) if schema_file else {}
    for name in extra:
        validation.action(name)
        if name in actions:
            continue  # a built-in listed in NEXMDM_ACTIONS keeps its own schemas
        if name in described:
            actions[name] = _operator_action(name, described[name], schema_file)
        else:
            untyped = {"$schema": DIALECT, **UNTYPED}
            actions[name] = Action(
                name, "an operator-defined action (untyped)", untyped, untyped, builtin=False, typed=False
            )
    stray = sorted(set(described) - set(extra) - set(BUILTIN))
    if stray:
        raise InvalidArgument(
            f"NEXMDM_ACTION_SCHEMAS describes {stray[0]!r}, which is not in NEXMDM_ACTIONS", field="action_schemas"
        )
    return Catalogue(actions)


def catalogue_for(settings: Settings | None = None) -> Catalogue:
    """The catalogue of these settings: the built-in actions, then ``NEXMDM_ACTIONS``' own (cached)."""
    if settings is None:
        return _build((), "")
    return _build(tuple(settings.actions), settings.action_schemas)


def is_destructive(name: str, settings: Settings | None = None) -> bool:
    """Whether the action needs approval before it is sent (``wipe``, or an operator's action so described)."""
    action = catalogue_for(settings).actions.get(name)
    return action is not None and action.destructive
