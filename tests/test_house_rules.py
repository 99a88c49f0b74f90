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


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _graph(package: str) -> dict[str, set[str]]:
    import grimp  # import-linter's own graph: it sees imports inside functions too

    graph = grimp.build_graph(package)
    return {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package: str) -> None:
    assert _cycles(_graph(package)) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    # the check above would pass vacuously if it never found anything: a known cycle and a known chain
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_declared_layers_hold() -> None:
    import subprocess
    import sys

    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_tests_import_no_test_module_or_conftest() -> None:
    # what tests share lives in tests/support/ (a test module imported as a module runs its tests twice)
    for path in sorted((ROOT / "tests").rglob("*.py")):
        shared = {m for m in _imports(path) if m.startswith("tests.") and not m.startswith("tests.support")}
        assert not shared, f"{path.relative_to(ROOT)} imports {sorted(shared)}: move what it needs to tests/support/"


def test_every_package_is_installed() -> None:
    # pyproject.toml lists the packages a wheel ships: one left out works in a checkout and breaks an install
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for package in PACKAGES
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert sorted(found - listed) == []


def test_every_console_asset_is_shipped() -> None:
    # the console's templates and static files are package data: one whose suffix no pattern names would be
    # served in a checkout and be a 404 (or a template error) in an installed wheel
    import fnmatch
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    folder = ROOT / "nexmdm_api" / "console"
    assets = [p.relative_to(folder).as_posix() for sub in ("templates", "static") for p in (folder / sub).rglob("*")]
    assert "static/htmx.min.js" in assets
    unshipped = [a for a in assets if not any(fnmatch.fnmatch(a, pat) for pat in patterns["nexmdm_api.console"])]
    assert unshipped == []


#: tests/core files about no one core module, and why; every other one is named after the module it tests
CROSS_CUTTING_CORE_TESTS = {
    "test_database_urls.py": "one URL, two owners: the settings' normalisation and the PostgreSQL tools' conninfo",
    "test_db_files.py": "the modes of every file NexMDM writes (the SQLite files, the APK folder): a security rule",
    "test_restart.py": "a PostgreSQL restart under the engine, an idle pool and the delivery worker together",
}
#: a second file on one module, ``test_<module>_<aspect>.py``: a Hypothesis state machine beside the examples
ASPECTS = ("stateful",)


def _core_modules() -> set[str]:
    """Every core module and package as a test file names it: ``core/commands/push/sender.py`` is
    ``commands_push_sender``, ``core/campaigns/__init__.py`` is ``campaigns``."""
    names = set()
    for path in (ROOT / "core").rglob("*.py"):
        parts = path.relative_to(ROOT / "core").with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if parts:
            names.add("_".join(parts))
    return names


def _unnamed(test_files: list[str], modules: set[str]) -> list[str]:
    strays = []
    for name in test_files:
        subject = name.removeprefix("test_").removesuffix(".py")
        for aspect in ASPECTS:
            subject = subject.removesuffix(f"_{aspect}")
        if name not in CROSS_CUTTING_CORE_TESTS and subject not in modules:
            strays.append(name)
    return strays


def test_core_tests_are_named_after_the_module_they_test() -> None:
    # a rename in core renames its test file too: the file a reader looks for is where they look
    files = [p.name for p in sorted((ROOT / "tests" / "core").rglob("test_*.py"))]
    strays = _unnamed(files, _core_modules())
    assert not strays, (
        f"tests/core/{strays} name no core module: call a test of core/commands/push/sender.py "
        "test_commands_push_sender.py (a package: test_campaigns.py), or add it to CROSS_CUTTING_CORE_TESTS with why"
    )
    stale = [name for name in CROSS_CUTTING_CORE_TESTS if name not in files]
    assert not stale, f"CROSS_CUTTING_CORE_TESTS lists {stale}, which tests/core no longer holds"


def test_the_test_name_check_refuses_a_name_of_no_module() -> None:
    modules = {"devices", "devices_selectors", "profiles"}
    good = ["test_devices.py", "test_devices_selectors.py", "test_profiles_stateful.py", "test_restart.py"]
    assert _unnamed(good, modules) == []
    assert _unnamed(["test_fleet_selectors.py", "test_devices_stateless.py"], modules) == [
        "test_fleet_selectors.py",
        "test_devices_stateless.py",
    ]
