"""``nexmdm apps``: the apps devices report (their inventory), across the fleet or a selector."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from nexmdm_cli import render
from nexmdm_cli.render import CONTEXT, JsonOption, dash, escape, group, show, table
from nexmdm_cli.state import print_json, state

app = group("Apps: every package the devices report, and one package's versions as a histogram.")

SelectorOption = Annotated[
    str | None,
    typer.Option("--selector", "-l", help="Only devices matching: 'store=42', '@app(com.acme.pos)<4200'."),
]
#: the width of the longest bar in ``apps show``
BAR_WIDTH = 40


def bar(share: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of ``share`` (0–1) of ``width`` cells, in eighths."""
    eighths = round(max(0.0, min(1.0, share)) * width * 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + ("" if rest == 0 else " ▏▎▍▌▋▊▉"[rest])


@app.command("list", context_settings=CONTEXT)
def list_apps(
    ctx: typer.Context,
    selector: SelectorOption = None,
    limit: Annotated[int, typer.Option(min=1, max=100000, help="At most this many packages.")] = 500,
    json_output: JsonOption = False,
) -> None:
    """Every package on the (selected) devices: devices, distinct versions, the most common version and its
    share."""
    from core.inventory import reads

    st = state(ctx)
    with st.session() as db:
        items = reads.fleet_apps(db, st.settings, selector=selector, limit=limit)
    if json_output:
        print_json({"items": items})
        return
    if not items:
        show(
            "No device has reported an app."
            if selector is None
            else f"No device matching {escape(repr(selector))} has reported an app."
        )
        return
    out = table("Apps", "package", "devices", "versions", "most common", "share")
    for item in items:
        common = f"{item['top_version_code']} ({dash(item['top_version_name'])})"
        render.row(
            out, item["package"], f"{item['devices']:,}", str(item["versions"]), common, f"{item['top_share']:.0%}"
        )
    if len(items) == limit:
        out.caption = f"the first {limit} packages: use --limit for more"
    show(out)


@app.command("show", context_settings=CONTEXT)
def show_app(
    ctx: typer.Context,
    package: Annotated[str, typer.Argument(metavar="PACKAGE", help="The package name, such as com.acme.pos.")],
    selector: SelectorOption = None,
    json_output: JsonOption = False,
) -> None:
    """One package on the (selected) devices: devices per version code, newest first, as a histogram."""
    from core.inventory import reads
    from core.inventory.document import check_package

    st = state(ctx)
    check_package(package, "PACKAGE")
    with st.session() as db:
        data = reads.package_versions(db, st.settings, package, selector=selector)
    if json_output:
        print_json(data)
        return
    out = table(f"{package} on {data['devices']:,} devices", "version code", "version name", "devices", "share", "")
    top = max(v["share"] for v in data["versions"])
    for version in data["versions"]:
        render.row(
            out,
            str(version["version_code"]),
            dash(version["version_name"]),
            f"{version['devices']:,}",
            f"{version['share']:.1%}",
            Text(bar(version["share"] / top), style="cyan"),
        )
    show(out)
