"""Modules loaded at first use, so that ``nexmdm --help`` does not import SQLAlchemy, Alembic or httpx.

Typer builds every command's options when the root app is imported, so each command module is imported
by ``nexmdm --help``; the domain modules they call (``core.devices.records`` and the like pull in all of
SQLAlchemy) are bound with :func:`lazy_module` and imported on the first attribute access, inside the
command that needs them. Heavier one-off imports (Alembic, Litestar) are plain imports inside the
functions. ``tests/cli/test_startup.py`` pins that ``import nexmdm_cli.main`` stays light.

Unlike ``importlib.util.LazyLoader`` (not thread-safe before Python 3.12), nothing is put in
``sys.modules`` early: the first access runs an ordinary ``importlib.import_module``, under the import
system's own locks, so ``nexmdm serve``'s worker threads importing the same module meet no half-made one.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule:
    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{'' if self._module is None else ' (loaded)'}>"


def lazy_module(name: str) -> Any:
    """A stand-in for module ``name`` that imports it on first attribute access."""
    return _LazyModule(name)
