"""Shared presentation helpers: options every command takes, times, tables and secrets.

Rich goes to people only: tables are printed with :func:`show`, machine output with
``nexmdm_cli.state.print_json``; nothing here writes JSON.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from core.base.clock import utcnow
from core.base.durations import format_duration, parse_duration
from nexmdm_cli.state import err_console, out_console

CONTEXT = {"help_option_names": ["-h", "--help"]}

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of a table.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]

STATE_STYLES = {
    "online": "green",
    "stale": "yellow",
    "offline": "red",
    "revoked": "dim",
    "active": "green",
    "expired": "dim",
    "exhausted": "yellow",
    "pending": "yellow",
    "acked": "green",
    "sent": "green",
    "failed": "red",
    "skipped": "dim",
    "cancelled": "dim",
    "success": "green",
    "denied": "red",
    "delivered": "green",
    "dead": "red",
}


def group(help_text: str) -> typer.Typer:
    """A command group with ``-h`` and help shown when called without a sub-command."""
    return typer.Typer(help=help_text, context_settings=CONTEXT, no_args_is_help=True, rich_markup_mode="rich")


def since(text: str | None, *, field: str = "--since") -> datetime | None:
    """``--since 24h`` as the moment it names (None: no limit)."""
    if text is None:
        return None
    return utcnow() - parse_duration(text, field=field)


def relative(moment: datetime | None, now: datetime | None = None, *, never: str = "never") -> str:
    """``12s ago``, ``3h 5m ago``, ``in 45m``; ``never`` for None."""
    if moment is None:
        return never
    delta = (now or utcnow()) - moment
    if delta >= timedelta(0):
        return f"{format_duration(delta)} ago"
    return f"in {format_duration(-delta)}"


def stamp(moment: datetime | None) -> str:
    """A short absolute UTC time, for when the exact moment matters."""
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "—"


def styled(state: str | None) -> str:
    if state is None:
        return "—"
    style = STATE_STYLES.get(state)
    return f"[{style}]{state}[/{style}]" if style else state


def battery(pct: int | None, plugged: bool | None = None) -> str:
    if pct is None:
        return "—"
    text = f"{pct}%"
    if pct < 15 and not plugged:
        text = f"[red]{text}[/red]"
    return text + (" ⚡" if plugged else "")


def yes_no(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


def dash(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{num_bytes} B"


def table(title: str | None, *columns: str, caption: str | None = None) -> Table:
    result = Table(title=title, caption=caption, title_justify="left", header_style="bold")
    for name in columns:
        result.add_column(name, overflow="fold")
    return result


def show(renderable: Any) -> None:
    """Print a table (or one line of text with markup) for people, on stdout."""
    out_console.print(renderable, soft_wrap=isinstance(renderable, str))


def note(message: str) -> None:
    """A message for people, on stderr (stdout stays clean for data)."""
    err_console.print(message, soft_wrap=True)


def confirm(question: str) -> None:
    """Ask on stderr; stop with exit code 1 unless the answer is yes."""
    if not typer.confirm(question, default=False, err=True):
        note("[yellow]cancelled: nothing changed[/yellow]")
        raise typer.Exit(code=1)


def secret_once(kind: str, secret: str) -> None:
    """Print a new secret on stdout, once, with the warning on stderr."""
    note(f"[bold]New {kind}[/bold] (copy it now):")
    typer.echo(secret)
    note(f"[yellow]⚠ This {kind} is shown only once: NexMDM stores only its hash and cannot show it again.[/yellow]")
