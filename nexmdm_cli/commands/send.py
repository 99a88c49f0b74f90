"""``nexmdm send``: one command to one device, or a campaign to many (in waves, with a failure threshold)."""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any

import typer

from core.base.durations import parse_duration
from core.base.errors import InvalidArgument
from nexmdm_cli import render
from nexmdm_cli.render import JsonOption, YesOption, confirm, escape, note, show, table
from nexmdm_cli.state import CliState, print_json, state

# loaded by the command, not by `nexmdm --help`


def percent(text: str | None, option: str) -> float | None:
    """``5%`` or ``5`` as 5.0; anything else is a usage error."""
    if text is None:
        return None
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise InvalidArgument(f"{option} must be a percentage such as 5% (got {text!r})", field=option) from None
    if not 0 <= value <= 100:
        raise InvalidArgument(f"{option} must be between 0% and 100% (got {text!r})", field=option)
    return value


def _payload(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"--payload is not JSON: {exc.msg} at character {exc.pos}", field="--payload") from None
    if not isinstance(value, dict):
        raise InvalidArgument("--payload must be a JSON object", field="--payload")
    return value


def _waves(
    size: int | None, share: str | None, interval: str | None, min_success: str | None, max_failure: str | None
) -> dict[str, Any]:
    """The campaign's ``waves`` from the options (empty: no wave option given)."""
    waves: dict[str, Any] = {}
    if size is not None:
        waves["size"] = size
    if share is not None:
        waves["percent"] = percent(share, "--wave-percent")
    if interval is not None:
        waves["interval_seconds"] = int(parse_duration(interval, field="--wave-interval").total_seconds())
    if min_success is not None:
        waves["min_success_pct"] = percent(min_success, "--min-success")
    if max_failure is not None:
        waves["max_failure_pct"] = percent(max_failure, "--max-failure")
    if waves and "size" not in waves and "percent" not in waves:
        if set(waves) & {"interval_seconds", "min_success_pct"}:
            raise InvalidArgument("--wave-interval and --min-success need --wave-size or --wave-percent")
        waves["size"] = 1_000_000_000  # --max-failure alone: one wave, with a halt threshold
    return waves


def _show_dry_run(action: str, plain: bool, preview: dict[str, Any], json_output: bool) -> None:
    if json_output:
        print_json({"dry_run": True, "plain": plain, **preview})
        return
    note(f"{escape(action)} would go to {preview['matched']:,} devices (dry run: nothing sent); a sample:")
    out = table(None, "device")
    for device_id in preview["sample"]:
        render.row(out, device_id)
    show(out)


def send(
    ctx: typer.Context,
    action: Annotated[
        str, typer.Argument(help="An action of the catalogue: ping, ring, lock, locate, ... (nexmdm actions list).")
    ],
    device: Annotated[
        list[str] | None, typer.Option("--device", "-d", help="A device id (repeat for several).")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="A selector: 'store=42,@state=online'.")] = None,
    all_devices: Annotated[bool, typer.Option("--all", help="Every (unrevoked) device.")] = False,
    payload: Annotated[
        str | None, typer.Option(help="A JSON object sent with the command, valid for the action's payload schema.")
    ] = None,
    wave_size: Annotated[int | None, typer.Option(min=1, help="Devices per wave.")] = None,
    wave_percent: Annotated[str | None, typer.Option(help="Share of the targets per wave: 10%.")] = None,
    wave_interval: Annotated[str | None, typer.Option(help="Time between waves: 10m.")] = None,
    min_success: Annotated[
        str | None, typer.Option(help="Release the next wave only once this share of released targets acked.")
    ] = None,
    max_failure: Annotated[
        str | None, typer.Option(help="Halt when failed + expired exceed this share of released targets.")
    ] = None,
    expires: Annotated[str | None, typer.Option(help="Each command's lifetime after its release: 24h.")] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="Success is the device matching this selector after its ack ('@agent_version>=2.1'); "
            "devices that already match are skipped, gates count outcomes."
        ),
    ] = None,
    outcome_timeout: Annotated[
        str | None, typer.Option(help="With --until: how long after its ack a device may take to match (1h).")
    ] = None,
    note_text: Annotated[str | None, typer.Option("--note", help="What the campaign is for.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Reuse the key printed by an earlier attempt: a retry never sends twice.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show how many devices match; send nothing.")] = False,
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Send a command: one --device makes a plain command; --to, --all, several devices or waves a campaign.

    A campaign snapshots the matching devices now and releases their commands in waves; follow it with
    `nexmdm campaigns watch ID`. More than one target asks for confirmation unless --yes.
    """
    from core import campaigns as fleet
    from core.campaigns import outcomes
    from core.campaigns import records as campaigns_module
    from core.commands import dispatches
    from core.commands.catalogue import catalogue_for
    from core.commands.destructive import is_destructive
    from core.events import audit
    from core.storage import timeouts

    st = state(ctx)
    devices = list(dict.fromkeys(device or []))
    if sum((bool(devices), to is not None, all_devices)) != 1:
        raise InvalidArgument("give exactly one of --device, --to or --all", field="--to")
    body = _payload(payload)
    catalogue_for(st.settings).check_command(action, body)  # an unknown action or a bad payload: one line, first
    waves = _waves(wave_size, wave_percent, wave_interval, min_success, max_failure)
    expires_in = int(parse_duration(expires, field="--expires").total_seconds()) if expires else None
    timeout = (
        int(parse_duration(outcome_timeout, field="--outcome-timeout").total_seconds()) if outcome_timeout else None
    )
    plain = len(devices) == 1 and not waves and expires_in is None and until is None
    campaigns_module.validate_waves(waves)  # bad input fails before anything is printed or asked
    outcomes.validate(until, timeout)
    key = idempotency_key or f"cli-{secrets.token_hex(8)}"
    selector = "all" if all_devices else to
    targets = {"selector": selector} if selector is not None else {"device_ids": devices}
    with st.session() as db:
        if dry_run and selector is not None:  # a read only: under the selector time limit (writes are not)
            with timeouts.selector_reads(db, st.settings, selector):
                preview = fleet.preview(db, st.settings, **targets)
        else:
            preview = fleet.preview(db, st.settings, **targets)
    if dry_run:
        _show_dry_run(action, plain, preview, json_output)
        return
    if preview["matched"] == 0:
        raise InvalidArgument("no device matches: nothing to send", field="--to")
    if preview["matched"] > 1 and not yes:
        confirm(f"Send {action} to {preview['matched']:,} devices on {st.masked_url}?")
    note(f"idempotency key: {escape(key)} (retry with --idempotency-key {escape(key)} to never send twice)")
    if is_destructive(action, st.settings):
        _ask_approval(
            st,
            action=action,
            key=key,
            plain=plain,
            device=devices[:1],
            json_output=json_output,
            **{"payload": body, "waves": waves or None, "expires_in_seconds": expires_in, "note": note_text, **targets},
            **({} if until is None else {"success_when": until, "outcome_timeout_seconds": timeout}),
        )
        return
    if plain:
        with st.session() as db:
            created, dispatch = dispatches.create_command(
                db,
                st.settings,
                request_id=key,
                device_id=devices[0],
                action=action,
                payload=body,
                actor=audit.cli_actor(),
            )
        if json_output:
            print_json(dispatch | {"created": created})
            return
        verb = "queued" if created else "already queued (same key)"
        note(
            f"[green]✅ {escape(action)} {verb} for {escape(devices[0])}: "
            f"request {escape(dispatch['request_id'])}[/green]"
        )
        return
    with st.session() as db:
        created, campaign = fleet.create_campaign(
            db,
            st.settings,
            idempotency_key=key,
            action=action,
            payload=body,
            waves=waves or None,
            expires_in_seconds=expires_in,
            note=note_text,
            success_when=until,
            outcome_timeout_seconds=timeout,
            actor=audit.cli_actor(),
            **targets,
        )
    fleet.advance(st.session_factory, campaign["id"])  # the first wave now; servers and workers do the rest
    with st.session() as db:
        campaign = fleet.get_campaign(db, campaign["id"])
    if json_output:
        print_json(campaign | {"created": created})
        return
    waves_text = f"{campaign['waves']['count']} waves of {campaign['waves']['size']:,}"
    if campaign["counts"]["skipped"]:
        waves_text += f", {campaign['counts']['skipped']:,} skipped (already satisfied)"
    note(
        f"[green]✅ campaign {escape(campaign['id'])} {'created' if created else 'already exists (same key)'}: "
        f"{escape(action)} to "
        f"{campaign['targeted']:,} devices, {waves_text}[/green]"
    )
    note(f"follow it: nexmdm campaigns watch {escape(campaign['id'])}")


def _ask_approval(
    st: CliState, *, action: str, key: str, plain: bool, device: list[str], json_output: bool, **campaign: Any
) -> None:
    """A destructive action: an approval request (a second admin approves: ``nexmdm approvals approve``)."""
    from core import approvals
    from core.events import audit

    with st.session() as db:
        if plain:
            created, item = approvals.request_command(
                db,
                st.settings,
                request_id=key,
                device_id=device[0],
                action=action,
                payload=campaign["payload"],
                actor=audit.cli_actor(),
            )
        else:
            created, item = approvals.request_campaign(
                db, st.settings, idempotency_key=key, action=action, actor=audit.cli_actor(), **campaign
            )
    if json_output:
        print_json(item | {"created": created})
        return
    note(
        f"[yellow]⏳ {escape(action)} is destructive: approval {escape(item['id'])} "
        f"{'requested' if created else 'already requested (same key)'}; nothing is sent before another admin "
        f"approves it (nexmdm approvals approve {escape(item['id'])}) and the cooling-off delay passes[/yellow]"
    )
