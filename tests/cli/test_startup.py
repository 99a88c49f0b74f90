"""The CLI starts fast: importing the root app (all that ``nexmdm --help`` needs) loads neither Alembic nor
SQLAlchemy nor the HTTP stack; the commands import them inside their functions when they run, and
``nexmdm devices list`` reads with SQLAlchemy Core alone (``core/devices/listing.py``), without the ORM."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from core.devices.labels import label_device
from core.enrollment import tokens as credentials
from nexmdm_cli.commands import tokens
from nexmdm_cli.main import app
from tests.support.cli import Cli
from tests.support.databases import add_device

HEAVY = ("alembic", "sqlalchemy", "httpx", "litestar", "uvicorn", "core.models", "core.storage.engine")

_PROBE = """
import json, sys
import nexmdm_cli.main
loaded = [m for m in {heavy!r} if type(sys.modules.get(m)).__name__ == "module"]
print(json.dumps(loaded))
"""


def _loaded_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_importing_the_cli_does_not_import_alembic_or_sqlalchemy() -> None:
    # a fresh interpreter: this test process has imported everything already
    assert _loaded_after(_PROBE.format(heavy=HEAVY)) == []


def test_help_does_not_import_them_either() -> None:
    code = (
        "import json, sys\nfrom nexmdm_cli.main import app\nfrom typer.testing import CliRunner\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "for group in ('db', 'devices', 'tokens', 'cleanup', 'schema', 'demo'):\n"
        "    assert CliRunner().invoke(app, [group, '--help']).exit_code == 0, group\n"
        + _PROBE.format(heavy=HEAVY).split("import nexmdm_cli.main\n", 1)[1]
    )
    assert _loaded_after(code) == []


def test_a_command_still_loads_what_it_needs(cli_env: dict) -> None:
    result = CliRunner().invoke(app, ["--database-url", "sqlite:///:memory:", "devices", "list", "--json"], env=cli_env)
    assert result.exit_code == 5  # reached the database (not migrated): the lazy modules loaded and ran
    assert "not migrated" in result.stderr


#: what the fleet listing must not load: the ORM and the models (the last measured ~0.1 s of its start-up)
ORM = ("sqlalchemy.orm", "core.models", "core.devices.records", "core.campaigns", "alembic")


def test_devices_list_reads_without_the_orm(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    add_device(session_factory, "dev_b", last_battery_pct=40)
    add_device(session_factory, "dev_a")
    with session_factory.begin() as db:
        label_device(db, "dev_b", {"store": "42", "tier": "gold"}, [])
    code = (
        "import json, sys\nfrom typer.testing import CliRunner\nfrom nexmdm_cli.main import app\n"
        f"result = CliRunner().invoke(app, ['--database-url', {cli.url!r}, 'devices', 'list', '--json'], "
        f"env={cli.env!r})\n"
        "assert result.exit_code == 0, result.output\n"
        "print(result.stdout)\n"
        f"print(json.dumps([m for m in {ORM!r} if type(sys.modules.get(m)).__name__ == 'module']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    listing, loaded = out.rstrip().rsplit("\n", 1)
    assert json.loads(loaded) == []
    items = json.loads(listing)["items"]
    assert [(d["device_id"], d["state"], d["battery_pct"], d["labels"]) for d in items] == [
        ("dev_a", "offline", None, {}),
        ("dev_b", "offline", 40, {"store": "42", "tier": "gold"}),
    ]
    assert json.loads(listing) == cli.json("devices", "list")  # the same document in this process (ORM loaded)


def test_the_help_texts_limits_match_core() -> None:
    assert tokens.MAX_TOKEN_USES == credentials.MAX_TOKEN_USES
