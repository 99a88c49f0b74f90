"""``nexmdm tokens``: enrollment tokens. The secret is printed once; lists never show it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from core.base.clock import utcnow
from core.base.durations import parse_duration
from core.base.errors import InvalidArgument
from nexmdm_cli import render
from nexmdm_cli.render import CONTEXT, JsonOption, dash, escape, group, note, relative, secret_once, show, styled, table
from nexmdm_cli.state import print_json, state

#: core.enrollment.tokens.MAX_TOKEN_USES, spelled out for the help text (tests/cli/test_startup.py pins it)
MAX_TOKEN_USES = 1_000_000

app = group("Enrollment tokens: what a new device presents to enroll.")


@app.command(context_settings=CONTEXT)
def create(
    ctx: typer.Context,
    uses: Annotated[int, typer.Option(min=1, max=MAX_TOKEN_USES, help="How many devices may enroll.")] = 1,
    expires: Annotated[str, typer.Option(help="Lifetime: 30m, 1h, 7d... (at most 365d).")] = "1h",
    note_text: Annotated[str | None, typer.Option("--note", help="What the token is for (shown in lists).")] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="key=value every device enrolled with it starts with (repeat for several)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Create an enrollment token and print its secret, once."""
    from core.devices import labels as labels_module
    from core.enrollment import tokens as credentials
    from core.events import audit

    st = state(ctx)
    lifetime = parse_duration(expires, field="--expires")
    labels, removed = labels_module.parse_label_args(label or [])
    if removed:
        raise InvalidArgument("--label takes key=value", field="--label")
    with st.session() as db:
        secret, token = credentials.create_enrollment_token(
            db, uses=uses, expires_in=lifetime, note=note_text, labels=labels, actor=audit.cli_actor()
        )
    if json_output:
        print_json(token | {"secret": secret})
        return
    plural = "s" if uses != 1 else ""
    note(
        f"Enrollment token [bold]{escape(token['id'])}[/bold] on {escape(st.masked_url)}: {uses} use{plural}, "
        f"expires {relative(token['expires_at'])}"
    )
    secret_once("enrollment token", secret)


def _rows(items: list[dict[str, Any]]) -> Any:
    now = utcnow()
    out = table("Enrollment tokens (newest first)", "id", "state", "uses", "expires", "created", "note")
    for item in items:
        render.row(
            out,
            item["id"],
            styled(item["state"]),
            f"{item['uses']}/{item['max_uses']}",
            relative(item["expires_at"], now),
            relative(item["created_at"], now),
            dash(item["note"]),
        )
    return out


@app.command("list", context_settings=CONTEXT)
def list_tokens(
    ctx: typer.Context,
    active: Annotated[bool, typer.Option("--active", help="Only tokens that can still enroll a device.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Enrollment tokens with their state and uses (never their secrets)."""
    from core.enrollment import tokens as credentials

    with state(ctx).session() as db:
        items = credentials.list_enrollment_tokens(db, include_inactive=not active)
    if json_output:
        print_json({"items": items})
    elif not items:
        show("No enrollment tokens: create one with `nexmdm tokens create`.")
    else:
        show(_rows(items))


@app.command(context_settings=CONTEXT)
def revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token id (enr_...), as `tokens list` shows.")],
    json_output: JsonOption = False,
) -> None:
    """Revoke an enrollment token: no further device can enroll with it (enrolled devices are unaffected)."""
    from core.enrollment import tokens as credentials
    from core.events import audit

    st = state(ctx)
    with st.session() as db:
        token = credentials.revoke_enrollment_token(db, token_id, actor=audit.cli_actor())
    if json_output:
        print_json(token)
        return
    note(f"[green]✅ enrollment token {escape(token_id)} revoked on {escape(st.masked_url)}[/green]")
