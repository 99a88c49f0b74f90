"""``nexmdm db backup`` and ``nexmdm db restore``: the whole database in one file (see ``core.ops.backup``).

Registered on the ``db`` group by ``nexmdm_cli.commands.db``. A backup runs beside a live server; a
restore replaces the database in one transaction, after checking the file (kind, integrity, migration).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from core.base.errors import Conflict
from nexmdm_cli.render import JsonOption, YesOption, confirm, note, size
from nexmdm_cli.state import err_console, print_json, state

PathArgument = Annotated[Path, typer.Argument(metavar="PATH", help="The backup file.", show_default=False)]


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (on a terminal only); yields the ``progress(done, total)`` callback."""
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(
        *columns, TimeRemainingColumn(), console=err_console, transient=True, disable=not err_console.is_terminal
    ) as bar:
        task = bar.add_task(description, total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=max(total, 1))

        yield report


def _summary(result: Any) -> dict[str, Any]:
    rate = result.size_bytes / result.seconds if result.seconds > 0 else None
    return {
        "path": str(result.path),
        "database": result.kind,
        "revision": result.revision,
        "size_bytes": result.size_bytes,
        "seconds": round(result.seconds, 3),
        "bytes_per_second": round(rate) if rate else None,
    }


def backup(
    ctx: typer.Context,
    path: PathArgument,
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Write a backup of the whole database to PATH (safe while `nexmdm serve` runs).

    SQLite: a consistent copy through SQLite's online backup API. PostgreSQL: `pg_dump --format=custom`.
    The file is written next to PATH and renamed into place when complete (mode 0600); an existing PATH is
    replaced only after confirmation (or --yes). Adds a `db.backup` audit row.
    """
    from core.events import audit
    from core.ops import backup as backups

    st = state(ctx)
    st.require_database()
    url = st.settings.database_url
    backups.check_destination(path)
    if path.exists() and not yes:
        confirm(f"Replace the existing file {path}?")
    note(f"Backing up [bold]{st.masked_url}[/bold] to {path}")
    st.close()  # nothing of this process holds the database while it is copied
    with _progress("backup") as report:
        result = backups.backup(url, path, report, actor=audit.cli_actor())
    summary = _summary(result)
    if json_output:
        print_json(summary)
        return
    note(
        f"[green]✅ {path}: {size(result.size_bytes)} in {result.seconds:.1f} s "
        f"(migration {result.revision or 'none'})[/green]"
    )


def restore(
    ctx: typer.Context,
    path: PathArgument,
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Replace the whole database with the backup at PATH; asks first.

    The file is checked before anything changes: its kind (SQLite or a pg_dump archive), that it is whole,
    and its migration (a backup from a newer NexMDM is refused; after an older one, `nexmdm db upgrade` is
    offered). A database that other processes use is refused unless --yes (on PostgreSQL their
    sessions are then ended; servers reconnect by themselves). Adds a `db.restore` audit row.
    """
    from core.events import audit
    from core.ops import backup as backups

    st = state(ctx)
    url = st.settings.database_url
    backup_file = backups.inspect(path)
    backups.check_restorable(backup_file, url)
    st.close()
    users = backups.users(url)
    if users and not yes:
        noun = "processes" if url.startswith("sqlite") else "sessions"
        raise Conflict(
            f"{st.masked_url} is in use by other {noun} ({users}): stop `nexmdm serve` and the workers first, "
            "or pass --yes"
        )
    if not yes:
        confirm(f"Replace every row of {st.masked_url} with the backup {path} (migration {backup_file.revision})?")
    note(f"Restoring [bold]{path}[/bold] into {st.masked_url}")
    with _progress("restore") as report:
        result = backups.restore(backup_file, url, report, evict=bool(users), actor=audit.cli_actor())
    summary = _summary(result) | {"schema": backup_file.schema}
    if json_output:
        print_json(summary)
    else:
        note(f"[green]✅ {st.masked_url} restored from {path} in {result.seconds:.1f} s[/green]")
    if backup_file.schema == "older":
        _offer_upgrade(ctx, backup_file.revision, ask=not yes and not json_output)


def _offer_upgrade(ctx: typer.Context, revision: str, *, ask: bool) -> None:
    """An older backup needs ``db upgrade`` before this NexMDM runs on it: offered (or said, for scripts)."""
    hint = f"the backup is at migration {revision}: run `nexmdm db upgrade` before starting this NexMDM"
    if not ask or not typer.confirm(f"The backup is at migration {revision}. Upgrade it now?", default=True, err=True):
        note(f"[yellow]{hint}[/yellow]")
        return
    from nexmdm_cli.migrating import upgrade_to

    upgrade_to(ctx, "head")
