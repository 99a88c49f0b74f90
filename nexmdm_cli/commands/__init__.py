"""Command groups, one module each; registered on the root app by ``nexmdm_cli.main``."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

import typer

#: (name, module) of each sub-command group; the module defines ``app``
_GROUPS = [
    ("db", "db"),
    ("schema", "schema"),
    ("heartbeats", "heartbeats"),
    ("dispatches", "dispatches"),
    ("devices", "devices"),
    ("tokens", "tokens"),
    ("keys", "keys"),
    ("apk", "apk"),
]
#: (module, function) of each top-level command
_COMMANDS = [
    ("cleanup", "cleanup"),
    ("serve", "serve"),
    ("simulate", "simulate"),
    ("demo", "demo"),
    ("worker", "worker"),
]


def _load_groups() -> list[tuple[str, typer.Typer]]:
    groups = []
    for name, module in _GROUPS:
        try:
            groups.append((name, import_module(f"nexmdm_cli.commands.{module}").app))
        except ModuleNotFoundError as exc:
            if exc.name != f"nexmdm_cli.commands.{module}":
                raise
    return groups


def _load_commands() -> list[Callable[..., Any]]:
    commands = []
    for module, function in _COMMANDS:
        try:
            commands.append(getattr(import_module(f"nexmdm_cli.commands.{module}"), function))
        except ModuleNotFoundError as exc:
            if exc.name != f"nexmdm_cli.commands.{module}":
                raise
    return commands


COMMAND_GROUPS = _load_groups()
COMMANDS = _load_commands()
