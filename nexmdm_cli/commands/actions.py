"""``nexmdm actions``: the action catalogue, each action's payload and result schema."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.syntax import Syntax
from rich.text import Text

from nexmdm_cli import render
from nexmdm_cli.render import CONTEXT, JsonOption, group, show, table, yes_no
from nexmdm_cli.state import print_json, state

app = group("The action catalogue: what a command may carry, its payload and result schemas.")


def fields_of(schema: dict[str, Any]) -> str:
    """``message*, phone`` (``*``: required), ``—`` for none, ``any`` for an untyped object."""
    properties = schema.get("properties")
    if properties is None:
        return "any"
    required = set(schema.get("required", []))
    return ", ".join(f"{name}{'*' if name in required else ''}" for name in properties) or "—"


@app.command("list", context_settings=CONTEXT)
def list_actions(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Every action: built-in ones, then NEXMDM_ACTIONS' own; payload and result fields (* required)."""
    from core.commands.catalogue import catalogue_for

    actions = [a.public() for a in catalogue_for(state(ctx).settings).actions.values()]
    if json_output:
        print_json({"items": actions})
        return
    out = table("Actions", "action", "payload", "result", "destructive", "least role", "kind")
    for action in actions:
        kind = "built-in" if action["builtin"] else ("yours, typed" if action["typed"] else "yours, untyped")
        render.row(
            out,
            action["name"],
            fields_of(action["payload_schema"]),
            fields_of(action["result_schema"]),
            yes_no(action["destructive"]),
            action["least_role"],
            kind,
        )
    show(out)


@app.command("show", context_settings=CONTEXT)
def show_action(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(help="The action's name: lock, locate, wipe...")],
    json_output: JsonOption = False,
) -> None:
    """One action: what it does, whether it is destructive, its payload and result schemas (JSON Schema)."""
    from core.commands.catalogue import catalogue_for

    data = catalogue_for(state(ctx).settings).get(action).public()
    if json_output:
        print_json(data)
        return
    out = table(f"Action {action}", "field", "value")
    render.row(out, "summary", data["summary"])
    render.row(out, "destructive", yes_no(data["destructive"]))
    render.row(out, "least role", data["least_role"])
    render.row(out, "payload fields", fields_of(data["payload_schema"]))
    render.row(out, "result fields", fields_of(data["result_schema"]))
    parts: list[Any] = [out]
    for kind in ("payload", "result"):
        # json.dumps escapes every control and non-ASCII character: nothing reaches the terminal raw
        parts += [
            Text(f"{kind} schema (JSON Schema 2020-12)", style="bold"),
            Syntax(json.dumps(data[f"{kind}_schema"], indent=2), "json"),
        ]
    show(Group(*parts))
