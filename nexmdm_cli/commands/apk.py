"""``nexmdm apk``: agent builds (APKs) and who downloaded them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.base.clock import utcnow
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
    relative,
    show,
    since,
    size,
    stamp,
    table,
)
from nexmdm_cli.state import print_json, state

app = group("APK builds of the device agent and their download audit trail.")


@app.command(context_settings=CONTEXT)
def add(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The .apk file to publish.")],
    version_code: Annotated[int, typer.Option(help="Android versionCode (unique, increasing).")],
    version_name: Annotated[str, typer.Option(help="Android versionName, e.g. 1.4.2.")],
    json_output: JsonOption = False,
) -> None:
    """Store an APK (in the database, or the APK folder with NEXMDM_APK_STORAGE=folder), record its size, sha256
    and the package its manifest declares (its versionCode must equal --version-code)."""
    from core.apk import builds as apk
    from core.events import audit

    st = state(ctx)
    with st.session() as db:
        build = apk.add_build_from_file(
            db, st.settings, file, version_code=version_code, version_name=version_name, actor=audit.cli_actor()
        )
    if json_output:
        print_json(build)
        return
    note(
        f"[green]✅ build {escape(build['version_name'])} ({build['version_code']}) added on "
        f"{escape(st.masked_url)}[/green]"
    )
    where = "in the database" if st.settings.apk_storage == "database" else str(apk.build_path(st.settings, build))
    show(f"{escape(where)}  {size(build['size_bytes'])}  sha256 {build['sha256']}")
    show(f"package {escape(build['package'] or '- (its manifest could not be read)')}")


@app.command(context_settings=CONTEXT)
def remove(
    ctx: typer.Context,
    build_id: Annotated[int, typer.Argument(metavar="ID", min=1, max=2**31 - 1, help="The build id (apk list).")],
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Withdraw a build (a bad latest): devices no longer get it; its audit trail stays."""
    from core.apk import builds as apk
    from core.events import audit

    st = state(ctx)
    with st.session() as db:
        apk.get_build(db, build_id)  # unknown or already removed: fail before asking
    if not yes:
        confirm(f"Remove APK build {build_id} on {st.masked_url}? Devices will no longer download it")
    with st.session() as db:
        build = apk.remove_build(db, build_id, actor=audit.cli_actor())
    if json_output:
        print_json(build)
        return
    note(
        f"[green]✅ build {escape(build['version_name'])} ({build['version_code']}) removed on "
        f"{escape(st.masked_url)}[/green]"
    )


@app.command("list", context_settings=CONTEXT)
def list_builds(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Builds, newest version first (the first one not removed is what devices get as latest)."""
    from core.apk import builds as apk

    with state(ctx).session() as db:
        items = apk.list_builds(db)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show("No builds yet: add one with `nexmdm apk add FILE --version-code N --version-name S`.")
        return
    out = table("APK builds (newest first)", "id", "code", "name", "package", "size", "sha256", "added", "removed")
    for item in items:
        render.row(
            out,
            str(item["id"]),
            str(item["version_code"]),
            item["version_name"],
            dash(item["package"]),
            size(item["size_bytes"]),
            item["sha256"][:16] + "…",
            stamp(item["created_at"]),
            stamp(item["removed_at"]) if item["removed_at"] else "-",
        )
    show(out)


@app.command(context_settings=CONTEXT)
def downloads(
    ctx: typer.Context,
    since_text: Annotated[
        str | None, typer.Option("--since", help="Only downloads within this window (24h, 7d...).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000, help="At most this many events.")] = 100,
    json_output: JsonOption = False,
) -> None:
    """The download audit trail, newest first: build, source, token id, client IP."""
    from core.apk import builds as apk

    start = since(since_text)
    with state(ctx).session() as db:
        items = apk.list_downloads(db, since=start, limit=limit)
    if json_output:
        print_json({"since": start, "items": items})
        return
    if not items:
        show("No downloads" + (f" in the last {escape(since_text.strip())}." if since_text else " yet."))
        return
    now = utcnow()
    out = table("APK downloads (newest first)", "when", "build", "source", "token", "ip")
    for item in items:
        render.row(
            out,
            relative(item["created_at"], now),
            f"{item['version_name']} ({item['version_code']})",
            item["source"],
            dash(item["token_id"]),
            dash(item["ip"]),
        )
    show(out)
