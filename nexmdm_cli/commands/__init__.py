"""Command groups, one module each; registered on the root app by ``nexmdm_cli.main``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from nexmdm_cli.commands import (
    actions,
    apk,
    approvals,
    apps,
    audit,
    campaigns,
    cleanup,
    console,
    db,
    demo,
    device_location,
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
from nexmdm_cli.render import CONTEXT

# in its own module (devices.py holds the fleet view); a command of the ``devices`` group all the same
devices.app.command("location", context_settings=CONTEXT)(device_location.location)

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
    ("approvals", approvals.app),
    ("audit", audit.app),
    ("webhooks", webhooks.app),
    ("actions", actions.app),
    ("console", console.app),
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
