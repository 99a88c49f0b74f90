"""``nexmdm schema check``: does the live database match the models?

Built on Alembic's ``compare_metadata``: the same comparison autogenerate uses, so tables, columns, types,
nullability, indexes, unique constraints and foreign keys are all covered by one well-kept library
rather than by hand-written reflection. One gap is closed here: Alembic pairs unique constraints by
name, and SQLite reflects a ``UNIQUE (col)`` written without a ``CONSTRAINT name`` as unnamed, which
Alembic would report as one missing and one unexpected constraint; we pair those by their columns
instead (the tests cover both backends). PostgreSQL partitions (children of a partitioned table) and
``alembic_version`` are skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from core.base.errors import DatabaseUnavailable
from nexmdm_cli.render import CONTEXT, JsonOption, escape, group, note, show
from nexmdm_cli.state import first_line, print_json, state

if TYPE_CHECKING:  # Alembic, SQLAlchemy and the models are imported by the check itself, not by --help
    from sqlalchemy import Connection

app = group("Compare the live database with the models.")

SKIPPED_TABLES = {"alembic_version"}


def _partitions(conn: Connection) -> set[str]:
    from sqlalchemy import text

    from core.storage.dialect import is_postgresql

    if not is_postgresql(conn):
        return set()
    rows = conn.execute(text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"))
    return {row[0] for row in rows}


def _name(obj: Any) -> str:
    return getattr(obj, "name", None) or "(unnamed)"


def _columns(obj: Any) -> str:
    return ", ".join(c.name for c in getattr(obj, "columns", []))


def describe(diff: Any) -> dict[str, str]:
    """One problem, in an operator's words, from one entry of ``compare_metadata``."""
    if isinstance(diff, list):  # column modifications come as a list of one tuple
        diff = diff[0]
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        table = diff[1].name
        what = "missing table" if kind == "add_table" else "unexpected table (not in the models)"
        return {"kind": kind, "table": table, "problem": f"{what} {table}"}
    if kind in ("add_column", "remove_column"):
        table, column = diff[2], diff[3]
        what = "missing column" if kind == "add_column" else "unexpected column"
        return {"kind": kind, "table": table, "problem": f"{what} {table}.{column.name}"}
    if kind in ("add_index", "remove_index"):
        index = diff[1]
        what = "missing index" if kind == "add_index" else "unexpected index"
        unique = "unique " if index.unique else ""
        table = index.table.name
        return {"kind": kind, "table": table, "problem": f"{what} {_name(index)} ({unique}{table}: {_columns(index)})"}
    if kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        constraint = diff[1]
        table = constraint.table.name
        label = "foreign key" if kind.endswith("_fk") else "unique constraint"
        what = "missing" if kind.startswith("add") else "unexpected"
        return {
            "kind": kind,
            "table": table,
            "problem": f"{what} {label} {_name(constraint)} ({table}: {_columns(constraint)})",
        }
    if kind == "modify_type":
        table, column, info, found, wanted = diff[2], diff[3], diff[4], diff[5], diff[6]
        found = info.get("existing_type", found) if found is None else found
        problem = f"type of {table}.{column} is {found}, the models say {wanted}"
        return {"kind": kind, "table": table, "problem": problem}
    if kind == "modify_nullable":
        table, column, wanted = diff[2], diff[3], diff[6]
        should = "allow NULL" if wanted else "be NOT NULL"
        return {"kind": kind, "table": table, "problem": f"{table}.{column} should {should}"}
    return {"kind": str(kind), "table": "", "problem": f"differs from the models: {diff!r}"}


def _unique_column_sets(conn: Connection, table: str, *, reflected: bool) -> list[frozenset[str]]:
    from sqlalchemy import UniqueConstraint, inspect

    from core.models import Base

    if not reflected:
        model = Base.metadata.tables.get(table)
        constraints = [c for c in model.constraints if isinstance(c, UniqueConstraint)] if model is not None else []
        return [frozenset(col.name for col in c.columns) for c in constraints]
    inspector = inspect(conn)
    found = inspector.get_unique_constraints(table) + [i for i in inspector.get_indexes(table) if i.get("unique")]
    return [frozenset(name for name in item["column_names"] if name is not None) for item in found]


def _same_unique_columns(conn: Connection, diff: Any) -> bool:
    """A unique constraint "missing" on one side that exists on the other under no (or another) name."""
    from sqlalchemy import UniqueConstraint

    if not isinstance(diff, tuple) or diff[0] not in ("add_constraint", "remove_constraint"):
        return False
    constraint = diff[1]
    if not isinstance(constraint, UniqueConstraint):
        return False
    columns = frozenset(col.name for col in constraint.columns)
    # a constraint missing from the database is looked for there; an unexpected one, in the models
    other_side = _unique_column_sets(conn, constraint.table.name, reflected=diff[0] == "add_constraint")
    return columns in other_side


def find_problems(conn: Connection) -> list[dict[str, str]]:
    """Every difference between the database behind ``conn`` and the models, plus the migration head."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from core.models import Base
    from core.storage.migrations import head_revision

    skipped = SKIPPED_TABLES | _partitions(conn)

    def include_name(name: str | None, type_: str, _parents: Any) -> bool:
        return not (type_ == "table" and name in skipped)

    context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
    diffs = [diff for diff in compare_metadata(context, Base.metadata) if not _same_unique_columns(conn, diff)]
    problems = [describe(diff) for diff in diffs]
    missing = {p["table"] for p in problems if p["kind"] == "add_table"}
    # a missing table's indexes are missing too: one line per table says it
    problems = [p for p in problems if p["kind"] == "add_table" or p["table"] not in missing]
    current, head = context.get_current_revision(), head_revision()
    if current != head:
        problems.append(
            {
                "kind": "migration",
                "table": "alembic_version",
                "problem": f"database at migration {current or '(none)'}, the code's head is {head}: "
                "run `nexmdm db upgrade`",
            }
        )
    return problems


@app.command(context_settings=CONTEXT)
def check(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Compare tables, columns, types, nullability, indexes, constraints and migration head; exit 1 on any problem."""
    from sqlalchemy.exc import OperationalError

    st = state(ctx)
    st.require_database()
    try:
        with st.engine.connect() as conn:
            note(f"Checking [bold]{escape(st.masked_url)}[/bold] against the models")
            problems = find_problems(conn)
    except OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach the database {st.masked_url}: {first_line(exc)}") from None
    if json_output:
        print_json({"database": st.masked_url, "ok": not problems, "problems": problems})
    elif not problems:
        show("[green]✅ Schema validation passed![/green]")
    else:
        for problem in problems:
            show(f"[red]❌[/red] {escape(problem['problem'])}")
    if problems:
        note(f"[red]schema check failed: {len(problems)} problem{'s' if len(problems) != 1 else ''}[/red]")
        raise typer.Exit(code=1)
