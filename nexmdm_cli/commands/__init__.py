"""Command groups, one module each; registered on the root app by ``nexmdm_cli.main``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from nexmdm_cli.commands import (
    apk,
    apps,
    audit,
    campaigns,
    cleanup,
    db,
    demo,
    devices,
    dispatches,
    heartbeats,
    keys,
    profiles,
    schema,
    send,
    serve,
    simulate,
    tokens,
    top,
    webhooks,
    worker,
)

#: (name, group) of each sub-command group
COMMAND_GROUPS: list[tuple[str, typer.Typer]] = [
    ("db", db.app),
    ("schema", schema.app),
    ("heartbeats", heartbeats.app),
    ("dispatches", dispatches.app),
    ("devices", devices.app),
    ("apps", apps.app),
    ("profiles", profiles.app),
    ("tokens", tokens.app),
    ("keys", keys.app),
    ("apk", apk.app),
    ("campaigns", campaigns.app),
    ("audit", audit.app),
    ("webhooks", webhooks.app),
]
#: top-level commands
COMMANDS: list[Callable[..., Any]] = [
    cleanup.cleanup,
    serve.serve,
    simulate.simulate,
    demo.demo,
    worker.worker,
    send.send,
    top.top,
    profiles.compliance,
]
