"""The CLI starts fast: importing the root app (all that ``nexmdm --help`` needs) loads neither Alembic nor
SQLAlchemy nor the HTTP stack; the commands import them when they run (``nexmdm_cli/lazy.py``)."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from core import credentials
from nexmdm_cli.commands import tokens
from nexmdm_cli.main import app

HEAVY = ("alembic", "sqlalchemy", "httpx", "litestar", "uvicorn", "core.models", "core.db")

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


def test_the_help_texts_limits_match_core() -> None:
    assert tokens.MAX_TOKEN_USES == credentials.MAX_TOKEN_USES
