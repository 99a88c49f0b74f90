"""``nexmdm db``: migrations through Alembic's Python API, from any folder.

Upgrade, downgrade, revision and check go through ``alembic.command``; current and history read
Alembic's ``ScriptDirectory`` and ``MigrationContext`` directly, so that they can print a table or one
JSON document (``alembic.command`` prints its own text to stdout).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from core.base.errors import InvalidArgument
from nexmdm_cli import render
from nexmdm_cli.commands import db_backup
from nexmdm_cli.migrating import alembic_step, config, current_revision, migrate, upgrade_to
from nexmdm_cli.render import CONTEXT, JsonOption, YesOption, confirm, escape, group, note, show, table
from nexmdm_cli.state import print_json, state

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

#: Alembic is imported by the commands that use it, never by ``nexmdm --help``

app = group("Database migrations (Alembic): upgrade after every deploy.")


@app.command(context_settings=CONTEXT)
def upgrade(
    ctx: typer.Context,
    revision: Annotated[
        str, typer.Argument(metavar="[REV]", help="Target revision (default: head, the newest).")
    ] = "head",
) -> None:
    """Migrate the database up to REV (default: head). Run it after every deploy.

    On PostgreSQL a migration waits at most NEXMDM_MIGRATION_LOCK_TIMEOUT_MS for a busy table, then retries.
    """
    upgrade_to(ctx, revision)


@app.command(context_settings=CONTEXT | {"ignore_unknown_options": True})  # so that `downgrade -1` works
def downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(metavar="REV", help="Target revision: an id, -1 for one step, or base.")],
    yes: YesOption = False,
) -> None:
    """Migrate the database down to REV; asks first, since it can drop tables and data."""
    st = state(ctx)
    st.require_database()
    before = current_revision(ctx)
    if not yes:
        confirm(f"Downgrade {st.masked_url} from {before or 'base'} to {revision}? This can drop tables and data")
    note(f"Downgrading [bold]{st.masked_url}[/bold] from {before or 'base'} to {revision}")
    from alembic import command

    migrate(ctx, "downgrade", lambda cfg: command.downgrade(cfg, revision))
    note(f"[green]✅ {st.masked_url} is at {current_revision(ctx) or 'base'}[/green]")


def _revisions(ctx: typer.Context, *, need_database: bool = True) -> tuple[ScriptDirectory, str | None]:
    """The migrations and the database's current one; read-only, so a missing SQLite file is never created
    (an error, or no current revision when ``need_database`` is false)."""
    from alembic.script import ScriptDirectory

    from core.storage.engine import sqlite_file

    st = state(ctx)
    script = ScriptDirectory.from_config(config(ctx))
    path = sqlite_file(st.settings.database_url)
    if path is not None and not path.exists() and not need_database:
        return script, None
    st.require_database()
    return script, current_revision(ctx)


@app.command(context_settings=CONTEXT)
def current(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Show the database's migration revision and whether it is the newest (head)."""
    script, rev = _revisions(ctx)
    head = script.get_current_head()
    data = {"database": state(ctx).masked_url, "current": rev, "head": head, "up_to_date": rev == head}
    if json_output:
        print_json(data)
        return
    mark = "[green](head)[/green]" if rev == head else f"[yellow](head is {head}: run `nexmdm db upgrade`)[/yellow]"
    show(f"{escape(data['database'])}: {escape(rev or 'not migrated')} {mark}")


@app.command(context_settings=CONTEXT)
def history(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the migrations, newest first, marking the head and the database's current one."""
    script, rev = _revisions(ctx, need_database=False)
    items: list[dict[str, Any]] = [
        {
            "revision": s.revision,
            "down_revision": s.down_revision,
            "message": s.doc,
            "is_head": s.is_head,
            "is_current": s.revision == rev,
        }
        for s in script.walk_revisions()
    ]
    if json_output:
        print_json({"database": state(ctx).masked_url, "current": rev, "items": items})
        return
    out = table("Migrations (newest first)", "revision", "parent", "message", "")
    for item in items:
        marks = Text(", ").join(
            Text(m, style=style)
            for m, style, on in (("head", "", item["is_head"]), ("current", "green", item["is_current"]))
            if on
        )
        render.row(out, item["revision"], item["down_revision"] or "base", item["message"] or "", marks)
    show(out)


@app.command(context_settings=CONTEXT)
def revision(
    ctx: typer.Context,
    message: Annotated[str, typer.Option("--message", "-m", help="What the migration does (the file name slug).")],
    autogenerate: Annotated[
        bool, typer.Option("--autogenerate", help="Fill in the changes between the models and the database.")
    ] = False,
) -> None:
    """Create a new migration file (for developers working from a checkout)."""
    from alembic import command

    if not message.strip():
        raise InvalidArgument("--message must not be empty", field="message")
    if autogenerate:
        current_revision(ctx)  # reachable? (else one error line, before any other message)
        note(f"Comparing the models with [bold]{state(ctx).masked_url}[/bold]")
    cfg = config(ctx)
    with alembic_step("revision"):
        scripts = command.revision(cfg, message=message, autogenerate=autogenerate)
    for script in scripts if isinstance(scripts, list) else [scripts]:
        if script is not None:
            typer.echo(script.path)


@app.command(context_settings=CONTEXT)
def check(ctx: typer.Context) -> None:
    """Fail (exit 1) when the models hold changes that no migration makes."""
    from alembic import command

    state(ctx).require_database()
    current_revision(ctx)  # reachable? (else one error line, before any other message)
    note(f"Comparing the models with the migrations on [bold]{state(ctx).masked_url}[/bold]")
    cfg = config(ctx)
    with alembic_step("check"):
        command.check(cfg)


app.command(context_settings=CONTEXT)(db_backup.backup)
app.command(context_settings=CONTEXT)(db_backup.restore)
