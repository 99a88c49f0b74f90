"""``nexmdm``: the operators' tool. One module per command group under ``nexmdm_cli/commands``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from typer._click.core import Context  # typer >= 0.29 runs on its own copy of click

from nexmdm_cli.errors import EXIT_INTERRUPTED, exit_code_for, message_for
from nexmdm_cli.render import escape  # an error quotes what it was given: no markup, no terminal control
from nexmdm_cli.state import CliState, err_console, state

#: exceptions that already carry their own exit code and message (typer >= 0.29 vendors click, so both)
_PASS_THROUGH: tuple[type[BaseException], ...] = (
    click.exceptions.Exit,
    click.exceptions.Abort,
    click.ClickException,
    typer.Exit,
    *(getattr(typer, name) for name in ("Abort", "TyperException") if hasattr(typer, name)),
)


def _masked(ctx: Context) -> str:
    """The database URL for an error message; never raises (the URL itself may be what failed)."""
    try:
        return state(ctx).masked_url if isinstance(ctx.obj, CliState) else "?"
    except Exception:  # noqa: BLE001 - a malformed URL must not turn one error into a traceback
        return "?"


class NexMDMGroup(TyperGroup):
    """Turns every error raised below it into one red line on stderr and an exit code: no tracebacks."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except KeyboardInterrupt:
            err_console.print("[red]interrupted[/red]")
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        except Exception as exc:  # the whole point: no traceback reaches an operator
            err_console.print(f"[red]error:[/red] {escape(message_for(exc, _masked(ctx)))}", soft_wrap=True)
            logging.getLogger("nexmdm.cli").debug("command failed", exc_info=True)
            raise typer.Exit(code=exit_code_for(exc)) from None
        finally:
            if isinstance(ctx.obj, CliState):
                ctx.obj.close()


CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="nexmdm",
    cls=NexMDMGroup,
    context_settings=CONTEXT,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="NexMDM: manage a fleet of Android devices (database, cleanup, devices, commands, tokens, APKs, API).",
)


@app.callback()
def main(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="NEXMDM_DATABASE_URL",
            help="Database to use (else NEXMDM_DATABASE_URL, else the embedded SQLite file).",
            show_envvar=True,
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log database operations to stderr.")] = False,
) -> None:
    """NexMDM: manage a fleet of Android devices."""
    ctx.obj = CliState(database_url=database_url)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")


def _register() -> None:
    from nexmdm_cli.commands import COMMAND_GROUPS, COMMANDS

    for name, group in COMMAND_GROUPS:
        app.add_typer(group, name=name)
    for command in COMMANDS:
        app.command(context_settings=CONTEXT)(command)


_register()


def run() -> None:
    """Console-script entry point."""
    app()
