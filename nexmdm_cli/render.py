"""Shared presentation helpers: options every command takes, times, tables and secrets.

Rich goes to people only: tables are printed with :func:`show`, machine output with
``nexmdm_cli.state.print_json``; nothing here writes JSON.

Every value that comes from the database or the command line is shown as it is, never as Rich markup and
never as terminal control (issue #21: an agent version ``[/red]`` made ``devices list`` fail, a stored
ESC sequence reached the operator's terminal): a table row goes through :func:`row` (a string is a plain
``Text``, a ``Text`` built here keeps its style), a value inside a markup string through :func:`escape`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.markup import escape as escape_markup
from rich.table import Table
from rich.text import Text

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


#: C0 and C1 controls (newline and tab too: a cell is one value), DEL and the bidi overrides
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: Any) -> str:
    """``value`` as text with every control character shown as an escape (``\\x1b``), never sent as it is."""
    return _CONTROL_RE.sub(_visible, str(value))


def escape(value: Any) -> str:
    """``value`` for a markup string: control characters shown as escapes, ``[`` never read as a tag."""
    return escape_markup(printable(value))


def escape_cell(value: Any) -> RenderableType:
    """A table cell: a string is plain text (never markup); a ``Text`` or another renderable built by the
    code is kept (its style was chosen here, its text went through :func:`printable`)."""
    return Text(printable(value)) if isinstance(value, str) else value


def row(out: Table, *values: Any) -> None:
    """Add one row of values to ``out``, each through :func:`escape_cell`."""
    out.add_row(*(escape_cell(value) for value in values))


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


def styled(state: str | None) -> Text:
    """A state in its colour (``.markup`` gives it for a markup string)."""
    if state is None:
        return Text("—")
    return Text(printable(state), style=STATE_STYLES.get(state, ""))


def battery(pct: int | None, plugged: bool | None = None) -> Text:
    if pct is None:
        return Text("—")
    text = Text(f"{pct}%", style="red" if pct < 15 and not plugged else "")
    return text + (" ⚡" if plugged else "")


def yes_no(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


def dash(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def compliance_line(states: dict[str, int]) -> str:
    """``compliant 1,150 (96%), noncompliant 40 (3%), ...``: devices per compliance state and their share
    (``nexmdm compliance``, ``nexmdm top``)."""
    total = sum(states.values()) or 1
    return ", ".join(f"{name} {count:,} ({count / total:.0%})" for name, count in states.items())


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
    """A table for people; ``title`` and ``caption`` are plain text (they often name a stored value)."""
    result = Table(
        title=None if title is None else Text(printable(title), style="table.title"),
        caption=None if caption is None else Text(printable(caption), style="table.caption"),
        title_justify="left",
        header_style="bold",
    )
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
