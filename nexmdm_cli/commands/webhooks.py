"""``nexmdm webhooks``: receivers of fleet events, their deliveries, dead letters and redelivery."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.base.clock import utcnow
from core.base.errors import InvalidArgument
from core.base.event_types import EVENT_TYPES
from nexmdm_cli import render
from nexmdm_cli.render import (
    CONTEXT,
    JsonOption,
    YesOption,
    confirm,
    dash,
    escape,
    group,
    note,
    printable,
    relative,
    show,
    styled,
    table,
)
from nexmdm_cli.state import print_json, state

app = group("Webhooks: signed POSTs of fleet events (device.offline, command.failed...) to your URLs.")


def _read_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError) as exc:
        raise InvalidArgument(
            f"cannot read --secret-file {path}: {exc.__class__.__name__}", field="--secret-file"
        ) from None


@app.command(context_settings=CONTEXT)
def add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="The receiver: an http:// or https:// URL.")],
    events: Annotated[str, typer.Option(help=f"Comma-separated events to send: {', '.join(EVENT_TYPES)}.")],
    secret_file: Annotated[
        Path | None,
        typer.Option(help="Read the signing secret (32-128 characters) from this file instead of making one."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Add a receiver. Without --secret-file a signing secret is made and printed, once."""
    from core.events import audit, webhooks

    st = state(ctx)
    given = _read_secret(secret_file) if secret_file is not None else None
    with st.session() as db:
        secret, endpoint = webhooks.add_endpoint(
            db, url=url, events=events.split(","), secret=given, actor=audit.cli_actor()
        )
    if json_output:
        print_json(endpoint | ({"secret": secret} if given is None else {}))
        return
    note(
        f"Webhook [bold]{escape(endpoint['id'])}[/bold] → {escape(endpoint['url'])} "
        f"for {escape(', '.join(endpoint['events']))}"
    )
    if given is None:
        note("[bold]Signing secret[/bold] (copy it now; verify NexMDM-Signature with it, see docs/webhooks.md):")
        typer.echo(secret)
        note("[yellow]⚠ shown only once[/yellow]")


@app.command("list", context_settings=CONTEXT)
def list_endpoints(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Receivers with their events (never their secrets)."""
    from core.events import webhooks

    with state(ctx).session() as db:
        items = webhooks.list_endpoints(db)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show("No webhooks: add one with `nexmdm webhooks add URL --events device.offline`.")
        return
    out = table("Webhooks", "id", "url", "events", "created")
    for item in items:
        render.row(out, item["id"], item["url"], ", ".join(item["events"]), relative(item["created_at"]))
    show(out)


@app.command(context_settings=CONTEXT)
def remove(
    ctx: typer.Context,
    endpoint_id: Annotated[str, typer.Argument(metavar="ID", help="The webhook id (whk_...).")],
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Remove a receiver; its undelivered events are dropped."""
    from core.events import audit, webhooks

    st = state(ctx)
    if not yes:
        with st.session() as db:
            webhooks.get_endpoint(db, endpoint_id)
        confirm(f"Remove webhook {printable(endpoint_id)}? Its undelivered events are dropped")
    with st.session() as db:
        data = webhooks.remove_endpoint(db, endpoint_id, actor=audit.cli_actor())
    if json_output:
        print_json(data)
        return
    note(f"[green]✅ webhook {escape(endpoint_id)} removed[/green]")


@app.command("test", context_settings=CONTEXT)
def send_test(
    ctx: typer.Context,
    endpoint_id: Annotated[str, typer.Argument(metavar="ID", help="The webhook id (whk_...).")],
    json_output: JsonOption = False,
) -> None:
    """Queue a signed webhook.test event for one receiver (a running server sends it)."""
    from core.events import audit, webhooks

    with state(ctx).session() as db:
        event_id = webhooks.send_test(db, endpoint_id, actor=audit.cli_actor())
    if json_output:
        print_json({"endpoint_id": endpoint_id, "event_id": event_id})
        return
    note(
        f"queued {escape(event_id)} for {escape(endpoint_id)}: "
        f"see `nexmdm webhooks deliveries --endpoint {escape(endpoint_id)}`"
    )


@app.command(context_settings=CONTEXT)
def deliveries(
    ctx: typer.Context,
    endpoint: Annotated[str | None, typer.Option(help="Only this webhook's deliveries.")] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only dead letters and deliveries that are failing (retrying).")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many deliveries.")] = 50,
    json_output: JsonOption = False,
) -> None:
    """Recent deliveries, newest first: status, attempts, last answer."""
    from core.events import webhooks

    with state(ctx).session() as db:
        items = webhooks.list_deliveries(db, endpoint_id=endpoint, failed=failed, limit=limit)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show("No deliveries match.")
        return
    now = utcnow()
    out = table(
        "Webhook deliveries (newest first)", "id", "event", "type", "device", "status", "tries", "last", "created"
    )
    for item in items:
        last = dash(item["last_error"]) if item["last_error"] else dash(item["last_status_code"])
        render.row(
            out,
            str(item["id"]),
            item["event_id"],
            item["event_type"],
            dash(item["device_id"]),
            styled(item["status"]),
            str(item["attempts"]),
            last,
            relative(item["created_at"], now),
        )
    show(out)


@app.command(context_settings=CONTEXT)
def redeliver(
    ctx: typer.Context,
    delivery_id: Annotated[int, typer.Argument(metavar="DELIVERY_ID", help="The delivery id (from `deliveries`).")],
    json_output: JsonOption = False,
) -> None:
    """Send a delivery again (a dead letter, or a delivered one): same event id, attempts start over."""
    from core.events import audit, webhooks

    with state(ctx).session() as db:
        data = webhooks.redeliver(db, delivery_id, actor=audit.cli_actor())
    if json_output:
        print_json(data)
        return
    note(f"delivery {escape(delivery_id)} ({escape(data['event_id'])}) queued again")
