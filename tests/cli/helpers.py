"""Helpers for CLI tests: run ``nexmdm`` through its real entry point and check the error contract."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner, Result

from nexmdm_cli.main import app


class Cli:
    """``cli("devices", "list")`` runs ``nexmdm --database-url URL devices list``."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.env = env
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, url: str | None = None) -> Result:
        return self.runner.invoke(app, ["--database-url", url or self.url, *args], input=input, env=self.env)

    def json(self, *args: str, url: str | None = None) -> Any:
        result = self(*args, "--json", url=url)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)


def one_error_line(result: Result) -> str:
    """The failure contract: one line on stderr, nothing on stdout, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == "", result.stdout
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines
    return lines[0]

