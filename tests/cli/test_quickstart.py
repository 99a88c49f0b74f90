"""docs/quickstart.md runs exactly as printed (the way sqlite-utils tests its docs), on both databases.

Every fenced block is executed in order: ``sh`` blocks by bash in a scratch folder that holds a copy of
``alembic.ini`` and the migrations (so ``alembic revision`` writes there, never into the repository),
``python`` blocks in one namespace in this process, ``crontab`` lines without their schedule. A ``text``
block is the output of the block before it and must match what that block printed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.storage.migrations import script_location
from tests.support.fakes.apk import apk_bytes

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "quickstart.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
APK = apk_bytes(b"quick start build" * 64)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))]


def test_the_page_has_what_the_seed_promised() -> None:
    text = DOC.read_text(encoding="utf-8")
    for needle in (
        "record_fcm_dispatch",
        'payload_hash="abc123"',
        "record_heartbeat_with_bucketing",
        "record_apk_download",
        "nexmdm cleanup",
        "crontab",
        "nexmdm schema check",
        "nexmdm db current",
        "nexmdm db history",
        "nexmdm db downgrade",
        "alembic current",
        "alembic revision",
    ):
        assert needle in text, needle
    assert {kind for kind, _ in blocks()} == {"sh", "python", "text", "crontab"}


def _run_shell(code: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(["bash", "-e", "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{code}\n--- stderr ---\n{result.stderr}"
    return result.stdout


def _run_python(code: str, namespace: dict[str, object]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), namespace)  # the documented snippet itself
    return out.getvalue()


@pytest.mark.slow
def test_every_snippet_runs_as_printed(fresh_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "checkout"
    work.mkdir()
    shutil.copy(ROOT / "alembic.ini", work / "alembic.ini")
    shutil.copytree(script_location(), work / "alembic", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "app-release.apk").write_bytes(APK)
    env = os.environ | {
        "NEXMDM_DATABASE_URL": fresh_url,
        "NEXMDM_DATA_DIR": str(tmp_path / "data"),
        "HOME": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": "200",
    }
    for name in ("NEXMDM_DATABASE_URL", "NEXMDM_DATA_DIR"):
        monkeypatch.setenv(name, env[name])
    namespace: dict[str, object] = {"__name__": "quickstart"}
    printed = ""
    try:
        for kind, code in blocks():
            if kind == "text":
                assert printed == code, f"the page shows:\n{code}\nthe snippet printed:\n{printed}"
                continue
            if kind == "sh":
                printed = _run_shell(code, work, env)
            elif kind == "python":
                printed = _run_python(code, namespace)
            elif kind == "crontab":
                for line in code.splitlines():
                    printed = _run_shell(line.split(maxsplit=5)[5], work, env)
            else:
                raise AssertionError(f"unknown block kind {kind!r}")
    finally:
        session = namespace.get("Session")
        if session is not None:
            session.kw["bind"].dispose()  # type: ignore[attr-defined]
    # what the snippets did really happened, in this database
    assert '"deleted": 0' in (tmp_path / "nexmdm-cleanup.log").read_text()
    assert [p.name for p in (work / "alembic" / "versions").glob("*_add_widgets.py")]
    assert not list((ROOT / "alembic" / "versions").glob("*_add_widgets.py"))
