"""``nexmdm keys``: admin API keys. The secret is printed once; lists never show it."""

from __future__ import annotations

from typing import Annotated

import typer

from core.base.clock import utcnow
from core.base.errors import NotFound
from nexmdm_cli import render
from nexmdm_cli.render import (
    CONTEXT,
    JsonOption,
    YesOption,
    confirm,
    escape,
    group,
    note,
    relative,
    secret_once,
    show,
    styled,
)
from nexmdm_cli.render import table as make_table
from nexmdm_cli.state import print_json, state

app = group("Admin API keys: for integrations and the admin endpoints.")


@app.command(context_settings=CONTEXT)
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="A unique name (A-Z a-z 0-9 . _ : -), e.g. the integration's.")],
    role: Annotated[
        str,
        typer.Option(help="viewer (read-only), operator (devices, commands, tokens, APKs) or admin (everything)."),
    ] = "admin",
    scope: Annotated[
        str | None,
        typer.Option(
            help="A selector the key is limited to (operator@store=42): it reaches only these devices, and "
            "cannot manage keys, webhooks, enrollment tokens or unscoped campaigns."
        ),
    ] = None,
    expires_in: Annotated[
        str | None,
        typer.Option("--expires-in", help="Lifetime: 30d, 12w, 90d... (default: never expires)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Create an admin API key and print its secret, once."""
    from core.access import keys as admin_keys
    from core.base.durations import parse_duration
    from core.events import audit

    lifetime = parse_duration(expires_in, field="--expires-in") if expires_in is not None else None
    st = state(ctx)
    with st.session() as db:
        secret, key = admin_keys.create_admin_key(
            db, name=name, role=role, scope=scope, expires_in=lifetime, actor=audit.cli_actor()
        )
    if json_output:
        print_json(key | {"secret": secret})
        return
    expiry = f", expires {relative(key['expires_at'])}" if key["expires_at"] else ""
    note(
        f"Admin key [bold]{escape(name)}[/bold] ({escape(key['id'])}, role "
        f"{escape(admin_keys.role_label(key['role'], key['scope']))}{expiry}) on {escape(st.masked_url)}"
    )
    secret_once("admin key", secret)


@app.command("list", context_settings=CONTEXT)
def list_keys(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Admin keys with their role and scope, state, expiry and last use (never their secrets).

    The last use is recorded at most once a minute per key, so it may be up to a minute behind."""
    from core.access import keys as admin_keys

    with state(ctx).session() as db:
        items = admin_keys.list_admin_keys(db)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show("No admin keys: create one with `nexmdm keys create --name NAME`.")
        return
    now = utcnow()
    out = make_table("Admin keys", "name", "id", "role", "scope", "state", "created", "expires", "last used")
    for item in items:
        render.row(
            out,
            item["name"],
            item["id"],
            item["role"],
            item["scope"] or "all devices",
            styled(item["state"]),
            relative(item["created_at"], now),
            relative(item["expires_at"], now),
            relative(item["last_used_at"], now),
        )
    show(out)


@app.command(context_settings=CONTEXT)
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.")],
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Revoke an admin key: requests with it fail at once. Names are never reused."""
    from core.access import keys as admin_keys
    from core.events import audit

    st = state(ctx)
    if not yes:
        with st.session() as db:
            if not any(key["name"] == name for key in admin_keys.list_admin_keys(db)):
                raise NotFound(f"no admin key named {name!r}")  # before asking
        confirm(f"Revoke admin key {name} on {st.masked_url}? Integrations using it stop working")
    with st.session() as db:
        key = admin_keys.revoke_admin_key(db, name, actor=audit.cli_actor())
    if json_output:
        print_json(key)
        return
    note(f"[green]✅ admin key {escape(name)} revoked on {escape(st.masked_url)}[/green]")
