"""``nexmdm audit``: who changed what. ``list`` for people, ``export`` streams every row for archives."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from core.base.clock import utcnow
from core.base.durations import parse_duration
from core.base.errors import InvalidArgument
from nexmdm_cli import render
from nexmdm_cli.render import CONTEXT, JsonOption, dash, group, relative, show, stamp, styled, table
from nexmdm_cli.state import print_json, state, to_jsonable

app = group("The audit trail: every admin change (API and CLI), refusals counted per minute.")

SinceOption = Annotated[
    str | None, typer.Option(help="Only events within this window (24h, 7d) or since an instant (2026-01-31T00:00Z).")
]
ActorOption = Annotated[str | None, typer.Option(help="Only this actor: key:NAME, cli:USER@HOST, system:worker.")]
ActionOption = Annotated[str | None, typer.Option(help="Only this action (device.revoke) or family (device.*).")]
OutcomeOption = Annotated[str | None, typer.Option(help="Only this outcome: success or denied.")]
FIELDS = ("id", "at", "actor", "action", "target", "client_address", "outcome", "count", "details")


#: a CSV cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection"): an actor,
#: target or client address chosen by a caller must not run in the auditor's spreadsheet (issue #21)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` for a CSV cell: text that a spreadsheet would read as a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def parse_since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return utcnow() - parse_duration(text, field="--since")
    except InvalidArgument:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgument(
                f"--since must be a window (24h, 7d) or an ISO 8601 instant with a zone; got {text!r}", field="--since"
            ) from None
        if moment.utcoffset() is None:
            raise InvalidArgument("--since needs a time zone (2026-01-31T00:00Z)", field="--since") from None
        return moment


def _outcome(value: str | None) -> str | None:
    if value is not None and value not in ("success", "denied"):
        raise InvalidArgument(f"--outcome must be success or denied; got {value!r}", field="--outcome")
    return value


@app.command("list", context_settings=CONTEXT)
def list_events(
    ctx: typer.Context,
    since: SinceOption = "7d",
    actor: ActorOption = None,
    action: ActionOption = None,
    outcome: OutcomeOption = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many events.")] = 100,
    json_output: JsonOption = False,
) -> None:
    """Recent audit events, newest first (default: the last 7 days)."""
    from core.events import audit

    start = parse_since(since)
    with state(ctx).session() as db:
        items = audit.list_events(db, since=start, actor=actor, action=action, outcome=_outcome(outcome), limit=limit)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show("No audit events match.")
        return
    now = utcnow()
    out = table("Audit events (newest first)", "at (UTC)", "when", "actor", "action", "target", "outcome", "from")
    for item in items:
        result = styled(item["outcome"])
        if item["count"] > 1:
            result += f" ×{item['count']}"
        render.row(
            out,
            stamp(item["at"]),
            relative(item["at"], now),
            item["actor"],
            item["action"],
            dash(item["target"]),
            result,
            dash(item["client_address"]),
        )
    show(out)


@app.command(context_settings=CONTEXT)
def export(
    ctx: typer.Context,
    format_: Annotated[str, typer.Option("--format", help="jsonl (one JSON object a line) or csv.")] = "jsonl",
    since: SinceOption = None,
    actor: ActorOption = None,
    action: ActionOption = None,
    outcome: OutcomeOption = None,
) -> None:
    """Every matching event to stdout, newest first, streamed in pages (constant memory at any size)."""
    from core.events import audit

    if format_ not in ("jsonl", "csv"):
        raise InvalidArgument(f"--format must be jsonl or csv; got {format_!r}", field="--format")
    start = parse_since(since)
    out = sys.stdout
    writer: Any = None
    if format_ == "csv":
        # RFC 4180's CRLF: the csv module quotes a value holding a character of the line terminator, so a
        # bare CR in a value is quoted too (with "\n" alone it split the row)
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\r\n")
        writer.writeheader()
    with state(ctx).session() as db:
        rows = audit.iter_events(db, since=start, actor=actor, action=action, outcome=_outcome(outcome))
        for row in rows:
            item = to_jsonable(row)
            if writer is None:
                out.write(json.dumps(item, separators=(",", ":")) + "\n")
            else:
                item["details"] = json.dumps(item["details"], separators=(",", ":"))
                writer.writerow({name: csv_cell(value) for name, value in item.items()})
    out.flush()
