"""docs/cli.md cannot drift: every registered command has help, a section, and its options named there."""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import takewhile
from pathlib import Path

import pytest
import typer.main

from nexmdm_cli.main import app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _walk(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from _walk(sub, (*path, name))


ROOT = typer.main.get_command(app)
ALL = list(_walk(ROOT))
LEAVES = [(path, cmd) for path, cmd in ALL if path and not getattr(cmd, "commands", None)]


def _sections() -> dict[str, str]:
    """``db upgrade`` → the text of its ``### `nexmdm db upgrade ...` `` section."""
    text = DOCS.read_text(encoding="utf-8")
    sections: dict[str, str] = {}
    parts = re.split(r"^### `nexmdm ", text, flags=re.MULTILINE)
    for part in parts[1:]:
        heading, _, body = part.partition("\n")
        words = list(takewhile(lambda w: re.fullmatch(r"[a-z][a-z-]*", w), re.split(r"[\s`]", heading)))
        sections[" ".join(words)] = heading + "\n" + body.split("\n## ")[0]
    return sections


def _section_for(path: tuple[str, ...], sections: dict[str, str]) -> str | None:
    # the heading starts with the command path; what follows are its arguments and options
    wanted = " ".join(path)
    for words, body in sections.items():
        if words == wanted or words.startswith(wanted + " "):
            return body
    return None


def test_the_tree_is_complete() -> None:
    names = {" ".join(path) for path, _ in LEAVES}
    for expected in (
        "db upgrade",
        "schema check",
        "cleanup",
        "heartbeats show",
        "dispatches stats",
        "devices revoke",
        "tokens create",
        "keys revoke",
        "apk downloads",
    ):
        assert expected in names


@pytest.mark.parametrize(("path", "command"), ALL, ids=[" ".join(path) or "nexmdm" for path, _ in ALL])
def test_every_command_and_group_has_help(path: tuple[str, ...], command: object) -> None:
    assert (getattr(command, "help", None) or "").strip(), f"`nexmdm {' '.join(path)}` has no help text"
    for param in getattr(command, "params", []):
        if param.param_type_name == "option" and param.name != "help":
            assert (param.help or "").strip(), f"option {param.opts} of `nexmdm {' '.join(path)}` has no help"


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=[" ".join(path) for path, _ in LEAVES])
def test_every_command_is_documented_with_its_options(path: tuple[str, ...], command: object) -> None:
    section = _section_for(path, _sections())
    assert section is not None, f"docs/cli.md has no '### `nexmdm {' '.join(path)}`' section"
    assert "```console" in section, f"the section of `nexmdm {' '.join(path)}` has no example"
    for param in command.params:
        if param.param_type_name != "option" or param.name == "help":
            continue
        long_names = [opt for opt in param.opts if opt.startswith("--")]
        if "--json" in long_names:
            continue  # documented once, under Conventions: every data command takes it
        assert any(name in section for name in long_names), (
            f"option {long_names} of `nexmdm {' '.join(path)}` is not mentioned in its docs/cli.md section"
        )


def test_global_options_are_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for param in ROOT.params:
        for opt in param.opts:
            assert f"`{opt}" in text, f"global option {opt} is not in docs/cli.md"


def test_documented_commands_exist() -> None:
    """The reverse: no section for a command that is gone (the API's commands may still be on their way)."""
    names = {" ".join(path) for path, _ in LEAVES}
    pending = {"serve", "simulate", "demo", "worker"} - names
    for words in _sections():
        assert any(words == n or words.startswith(n + " ") for n in names) or words.split()[0] in pending, words
