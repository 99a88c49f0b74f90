"""``nexmdm devices show`` with the inventory, ``nexmdm apps list`` and ``apps show``, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.inventory.document import check_report
from core.inventory.store import put_inventory
from tests.support.cli import Cli, one_error_line
from tests.support.databases import add_device
from tests.support.inventory import APPS, app, body


@pytest.fixture
def reported(session_factory: sessionmaker[Session], settings: Settings) -> None:
    for i, code in enumerate((4200, 4200, 4100)):
        add_device(session_factory, f"dev_{i}")
        with session_factory.begin() as db:
            apps = [app("com.acme.pos", code), *APPS[1:]] if i == 0 else [app("com.acme.pos", code)]
            put_inventory(db, f"dev_{i}", check_report(body(apps=apps)), settings)
    with session_factory.begin() as db:  # one update: an app-change row to show
        apps = [app("com.acme.pos", 4300), *APPS[1:]]
        put_inventory(db, "dev_0", check_report(body(apps=apps)), settings)


def test_devices_show_has_the_inventory(cli: Cli, reported: None) -> None:
    data = cli.json("devices", "show", "dev_0", "--apps")
    assert data["inventory"]["device"]["manufacturer"] == "samsung" and data["inventory"]["app_count"] == 3
    assert data["app_changes"][0]["change"] == "updated" and data["app_changes"][0]["to_version_code"] == 4300
    assert [a["package"] for a in data["apps"]] == ["com.acme.pos", "com.android.chrome", "org.example.notes"]
    assert "apps" not in cli.json("devices", "show", "dev_1")
    shown = cli("devices", "show", "dev_0", "--apps")
    assert shown.exit_code == 0, shown.stderr
    for text in ("Inventory", "Galaxy A10", "Recent app changes", "updated", "org.example.notes"):
        assert text in shown.stdout, text


def test_apps_list_and_show(cli: Cli, reported: None) -> None:
    items = cli.json("apps", "list")["items"]
    assert [(i["package"], i["devices"], i["versions"]) for i in items][0] == ("com.acme.pos", 3, 3)
    behind = cli.json("apps", "list", "--selector", "@app(com.acme.pos)<4300")["items"]
    assert behind == [
        {
            "package": "com.acme.pos",
            "devices": 2,
            "versions": 2,
            "top_version_code": 4200,
            "top_version_name": "42.0",
            "top_share": 0.5,
        }
    ]
    histogram = cli.json("apps", "show", "com.acme.pos")
    assert [(v["version_code"], v["devices"]) for v in histogram["versions"]] == [(4300, 1), (4200, 1), (4100, 1)]
    table = cli("apps", "show", "com.acme.pos", "--selector", "@api_level>=30")
    assert table.exit_code == 0, table.stderr
    assert "█" in table.stdout and "4300" in table.stdout
    listed = cli("apps", "list")
    assert "com.android.chrome" in listed.stdout and "100%" in listed.stdout


def test_apps_errors_are_one_line(cli: Cli, reported: None) -> None:
    missing = cli("apps", "show", "com.nobody.has")
    assert missing.exit_code == 3 and "com.nobody.has" in one_error_line(missing)
    bad = cli("apps", "show", "nodots")
    assert bad.exit_code == 2 and "package" in one_error_line(bad)
    selector = cli("apps", "list", "--selector", "@app(x")
    assert selector.exit_code == 2 and "invalid selector" in one_error_line(selector)


def test_the_simulated_inventory_speaks_the_protocol() -> None:
    from core.inventory.document import check_delta, check_report
    from nexmdm_cli.sim_inventory import SimInventory

    first, again = SimInventory.for_device("sim-0001"), SimInventory.for_device("sim-0001")
    assert first.apps == again.apps and 50 <= len(first.apps) <= 300  # seeded by the device id
    assert first.update_one() is None  # nothing reported yet: the next answer asks for the whole
    report = check_report(first.document())
    first.reported = report.hash
    delta = check_delta(first.update_one())
    assert delta.base_hash == report.hash and len(delta.upsert) == 1 and delta.hash == first.hash


def test_inventory_terms_work_wherever_selectors_do(cli: Cli, reported: None) -> None:
    behind = "@app(com.acme.pos)<4300"
    assert cli.json("top", "--once", "--selector", behind)["devices"]["total"] == 2
    assert [d["device_id"] for d in cli.json("devices", "list", "--selector", behind)["items"]] == ["dev_1", "dev_2"]
    labelled = cli("devices", "label", "--selector", behind, "ring=late", "--yes")
    assert labelled.exit_code == 0, labelled.stderr
    assert [d["device_id"] for d in cli.json("devices", "list", "--selector", "ring=late")["items"]] == [
        "dev_1",
        "dev_2",
    ]
