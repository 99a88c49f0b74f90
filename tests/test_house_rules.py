"""House rules that tools do not check by themselves (see shared STYLE.md and docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "nexmdm_api", "nexmdm_cli")
MAX_LINES = 400


def _modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", _modules(*PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_passes_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by responsibility"


def test_core_imports_neither_litestar_nor_typer() -> None:
    for path in _modules("core"):
        web_or_cli = {m for m in _imports(path) if m.split(".")[0] in ("litestar", "typer", "click", "rich")}
        assert not web_or_cli, f"{path.relative_to(ROOT)} imports {sorted(web_or_cli)}"


def test_command_modules_never_import_the_root_app() -> None:
    for path in _modules("nexmdm_cli/commands"):
        assert "nexmdm_cli.main" not in _imports(path), f"{path.relative_to(ROOT)} imports nexmdm_cli.main"
