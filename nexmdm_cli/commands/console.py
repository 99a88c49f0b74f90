"""``nexmdm console``: the browser console's sign-in links, for a site without an identity provider."""

from __future__ import annotations

from typing import Annotated

import typer

from nexmdm_cli.render import CONTEXT, JsonOption, escape, group, note, secret_once
from nexmdm_cli.state import print_json, state

app = group("The browser console at /console/ (served by `nexmdm serve`).")


@app.command(context_settings=CONTEXT)
def link(
    ctx: typer.Context,
    role: Annotated[
        str, typer.Option(help="viewer (read-only), operator (labels, campaigns) or admin (everything, audit).")
    ],
    scope: Annotated[
        str | None,
        typer.Option(help="Limit the person to the devices this selector matches (`store=42`); default: all."),
    ] = None,
    email: Annotated[str | None, typer.Option(help="Who signs in: the audit trail names them `user:EMAIL`.")] = None,
    url: Annotated[
        str | None,
        typer.Option(help="The server's address as the browser reaches it (else NEXMDM_PUBLIC_URL, else :8000)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Print a one-time sign-in URL for the console, valid 10 minutes (for sites without OpenID Connect)."""
    from core.access import console as people
    from core.events import audit

    st = state(ctx)
    with st.session() as db:
        token = people.create_link(db, role=role, scope=scope, email=email, actor=audit.cli_actor())
    base = (url or st.settings.public_url or "http://127.0.0.1:8000").rstrip("/")
    address = f"{base}/console/auth/link#token={token}"
    if json_output:
        print_json({"url": address, "role": role, "scope": people.check_scope(scope), "expires_in_seconds": 600})
        return
    note(
        f"Sign-in link for role [bold]{escape(role)}[/bold]{f' @ {escape(scope)}' if scope else ''}, valid 10 minutes:"
    )
    secret_once("sign-in link", address)
