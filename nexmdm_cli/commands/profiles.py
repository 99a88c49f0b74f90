"""``nexmdm profiles``: desired state as versioned documents (plan, apply, list, show, history, rollback,
delete), and ``nexmdm compliance``: the fleet's compliance by state, reason, profile or model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from nexmdm_cli import render
from nexmdm_cli.render import CONTEXT, JsonOption, YesOption, confirm, dash, escape, group, show, stamp, table
from nexmdm_cli.state import print_json, state

app = group("Profiles: desired state as versioned documents layered by selector and priority.")

FileOption = Annotated[
    Path, typer.Option("--file", "-f", help="The profile document, YAML or JSON (at most 256 KiB).", dir_okay=False)
]
Name = Annotated[str, typer.Argument(metavar="NAME", help="The profile's name.")]


def _read(path: Path) -> dict[str, Any]:
    from core.base.errors import InvalidArgument
    from core.profiles import document

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}", field="--file") from None
    return document.loads(raw, filename=path.name)


def _value(value: Any) -> str:
    return "—" if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _diff_table(title: str, rows: list[dict[str, Any]]) -> Any:
    out = table(title, "key", "old", "new")
    for change in rows:
        render.row(out, change["key"], _value(change["old"]), _value(change["new"]))
    return out


def _show_plan(planned: dict[str, Any]) -> None:
    name = escape(planned["name"])
    if not planned["changed"]:
        show(f"Profile {name}: unchanged (applying it writes nothing).")
        return
    show(_diff_table(f"Profile {planned['name']}{' (new)' if planned['new'] else ''}", planned["diff"]))
    show(f"{planned['devices_changing']:,} devices' effective profile changes.")
    for tie in planned["conflicts"]:
        show(
            f"[red]conflict:[/red] profile {escape(tie['profile'])} has the same priority ({tie['priority']}) and "
            f"sets {escape(', '.join(tie['keys']))}: applying is refused until one priority changes"
        )


@app.command("plan", context_settings=CONTEXT)
def plan(ctx: typer.Context, file: FileOption, json_output: JsonOption = False) -> None:
    """What applying FILE would do: per key old -> new, how many devices' effective profile changes, and
    ties with other profiles. Writes nothing."""
    from core.profiles import store

    st = state(ctx)
    raw = _read(file)
    with st.session() as db:
        planned = store.plan(db, st.settings, raw)
    if json_output:
        print_json(planned)
        return
    _show_plan(planned)


def _rollout(
    size: int | None, share: str | None, interval: str | None, max_noncompliant: str | None, grace: str | None
) -> dict[str, Any] | None:
    """The apply's ``rollout`` from the wave options (None: no wave option given)."""
    from core.base.durations import parse_duration
    from core.base.errors import InvalidArgument
    from nexmdm_cli.commands.send import percent

    def seconds(text: str, option: str) -> int:
        return int(parse_duration(text, field=option).total_seconds())

    rollout: dict[str, Any] = {}
    if size is not None:
        rollout["wave_size"] = size
    if share is not None:
        rollout["wave_percent"] = percent(share, "--wave-percent")
    if interval is not None:
        rollout["wave_interval_seconds"] = seconds(interval, "--wave-interval")
    if max_noncompliant is not None:
        rollout["max_noncompliant_pct"] = percent(max_noncompliant, "--max-noncompliant")
    if grace is not None:
        rollout["grace_seconds"] = seconds(grace, "--grace")
    if rollout and "wave_size" not in rollout and "wave_percent" not in rollout:
        raise InvalidArgument("--wave-interval, --max-noncompliant and --grace need --wave-percent or --wave-size")
    return rollout or None


@app.command("apply", context_settings=CONTEXT)
def apply(
    ctx: typer.Context,
    file: FileOption,
    wave_percent: Annotated[
        str | None, typer.Option(help="Roll out in waves of this share of the devices that change: 10%.")
    ] = None,
    wave_size: Annotated[int | None, typer.Option(min=1, help="Roll out in waves of this many devices.")] = None,
    wave_interval: Annotated[
        str | None,
        typer.Option(help="The least time between waves: 15m (a wave also waits for the last one's outcomes)."),
    ] = None,
    max_noncompliant: Annotated[
        str | None,
        typer.Option(help="Halt the rollout when more than this share of moved devices failed to comply: 5%."),
    ] = None,
    grace: Annotated[
        str | None,
        typer.Option(help="How long a moved device has to report compliant: 15m (NEXMDM_PROFILE_GRACE_SECONDS)."),
    ] = None,
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Apply FILE: a new immutable version when its content changed (audited with its diff); the devices it
    matched or matches get their new effective profile at once, or with --wave-percent/--wave-size wave by
    wave (a profile rollout: `nexmdm campaigns watch ID`)."""
    from core.campaigns import profile_rollouts
    from core.events import audit
    from core.profiles import store

    st = state(ctx)
    rollout = _rollout(wave_size, wave_percent, wave_interval, max_noncompliant, grace)
    raw = _read(file)
    if not yes:
        with st.session() as db:
            planned = store.plan(db, st.settings, raw)
        if not planned["changed"]:
            if json_output:
                print_json({**planned, "version": None})
            else:
                _show_plan(planned)
            return
        if not json_output:
            _show_plan(planned)
        how = " in waves" if rollout else ""
        confirm(f"Apply profile {planned['name']}{how} on {st.masked_url}?")
    with st.session() as db:
        applied = profile_rollouts.apply(db, st.settings, raw, audit.cli_actor(), rollout)
    if json_output:
        print_json(applied)
    elif applied["rollout"]:
        r = applied["rollout"]
        show(
            f"Profile {escape(applied['name'])} is at version {applied['version']}, rolling out to "
            f"{r['targeted']:,} devices in {r['waves']['count']} waves of {r['waves']['size']:,}: "
            f"`nexmdm campaigns watch {r['id']}` (pause, resume, cancel as a campaign)."
        )
    elif applied["changed"]:
        show(f"Profile {escape(applied['name'])} is at version {applied['version']}.")
    else:
        show(f"Profile {escape(applied['name'])}: unchanged at version {applied['version']} (nothing written).")


@app.command("list", context_settings=CONTEXT)
def list_profiles(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Every profile, lowest priority first, with its version, selector and how many devices it matches."""
    from core.profiles import store

    st = state(ctx)
    with st.session() as db:
        items = store.list_profiles(db)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show("No profile: write one (docs/profiles.md) and `nexmdm profiles apply -f FILE`.")
        return
    out = table("Profiles", "name", "version", "priority", "selector", "devices", "updated")
    for item in items:
        render.row(
            out,
            item["name"],
            str(item["version"]),
            str(item["priority"]),
            item["selector"] or "all",
            f"{item['devices']:,}",
            stamp(item["updated_at"]),
        )
    show(out)


@app.command("show", context_settings=CONTEXT)
def show_profile(
    ctx: typer.Context,
    name: Name,
    version: Annotated[int | None, typer.Option(min=1, help="This version instead of the current one.")] = None,
    json_output: JsonOption = False,
) -> None:
    """A profile's document (its current version, or --version N)."""
    from core.profiles import store

    st = state(ctx)
    with st.session() as db:
        data = store.show(db, name, version)
    if json_output:
        print_json(data)
        return
    show(
        f"Profile {escape(name)} version {data['version']} (current {data['current_version']}"
        f"{', deleted' if data['deleted'] else ''}), by {escape(data['created_by'])} at {stamp(data['created_at'])}"
    )
    # escaped line by line: the document's own line breaks stay line breaks, a value's controls do not act
    show("\n".join(escape(line) for line in json.dumps(data["document"], indent=2, ensure_ascii=False).splitlines()))


@app.command("history", context_settings=CONTEXT)
def history(ctx: typer.Context, name: Name, json_output: JsonOption = False) -> None:
    """A profile's versions, newest first, with who made each and the keys it changed."""
    from core.profiles import store

    st = state(ctx)
    with st.session() as db:
        items = store.history(db, name)
    if json_output:
        print_json({"name": name, "items": items})
        return
    out = table(f"Profile {name}", "version", "created", "by", "changed keys")
    for item in items:
        render.row(
            out, str(item["version"]), stamp(item["created_at"]), item["created_by"], ", ".join(item["changed_keys"])
        )
    show(out)


@app.command("rollback", context_settings=CONTEXT)
def rollback(
    ctx: typer.Context,
    name: Name,
    to_version: Annotated[int, typer.Option("--to-version", min=1, help="The version whose content comes back.")],
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """A new version with the content of --to-version (versions are never rewritten)."""
    from core.campaigns import profile_rollouts
    from core.events import audit

    st = state(ctx)
    if not yes:
        confirm(f"Make version {to_version} of profile {name} current again on {st.masked_url}?")
    with st.session() as db:
        applied = profile_rollouts.rollback(db, st.settings, name, to_version, audit.cli_actor())
    if json_output:
        print_json(applied)
        return
    if applied["changed"]:
        show(_diff_table(f"Profile {name} version {applied['version']}", applied["diff"]))
    else:
        show(f"Profile {escape(name)}: version {to_version} is the current content (nothing written).")


@app.command("delete", context_settings=CONTEXT)
def delete(ctx: typer.Context, name: Name, yes: YesOption = False, json_output: JsonOption = False) -> None:
    """Delete a profile: its devices lose its keys at once (its versions are kept)."""
    from core.campaigns import profile_rollouts
    from core.events import audit

    st = state(ctx)
    if not yes:
        confirm(f"Delete profile {name} on {st.masked_url}?")
    with st.session() as db:
        result = profile_rollouts.delete(db, st.settings, name, audit.cli_actor())
    if json_output:
        print_json(result)
    else:
        show(f"Profile {escape(name)} deleted (it was at version {result['version']}).")


def compliance(
    ctx: typer.Context,
    selector: Annotated[
        str | None, typer.Option("--selector", "-l", help="Only devices matching: 'store=42', '@compliance=pending'.")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Group by profile, reason or model (else by state only).")] = "state",
    json_output: JsonOption = False,
) -> None:
    """The fleet's profile compliance: devices compliant, noncompliant, pending (within the grace) and
    unknown (never reported), optionally by profile, reason or model."""
    from core.devices.compliance_terms import STATES
    from core.profiles import compliance as fleet_compliance

    st = state(ctx)
    with st.session() as db:
        data = fleet_compliance.summary(db, st.settings, selector=selector, by=by)
    if json_output:
        print_json(data)
        return
    show(f"{data['total']:,} devices: {render.compliance_line(data['states'])}")
    if by == "state":
        return
    columns = ("noncompliant",) if by == "reason" else STATES
    out = table(f"Compliance by {by}", by, *columns)
    for group_row in data["groups"]:
        render.row(out, dash(group_row["key"] or None), *(f"{group_row['states'].get(c, 0):,}" for c in columns))
    show(out)
