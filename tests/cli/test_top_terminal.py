"""``nexmdm top`` in a real terminal: tmux runs it, ``capture-pane`` reads the screen.

The numbers on the screen are those of a fleet the test seeded; the screen follows a resize; ``q`` and
Ctrl-C end it with exit code 0.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.cli.fleet import seed_fleet
from tests.cli.helpers import Cli
from tests.conftest import IN_CI

NEXMDM = str(Path(sys.executable).with_name("nexmdm"))


class Tmux:
    """A tmux server of its own (``-L``), so nothing touches anyone's sessions."""

    def __init__(self) -> None:
        self.socket = f"nexmdm-test-{uuid.uuid4().hex[:8]}"
        # the server (and so the program) gets a clean environment: the test runner's may carry COLUMNS and
        # LINES, which would pin the program's idea of the terminal's size
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8"}

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
            env=self.env,
        )
        return result.stdout

    def start(self, command: list[str], env: dict[str, str], width: int, height: int) -> None:
        """Run ``command`` in a ``width`` x ``height`` pane; when it ends, the shell prints ``EXIT=<status>``."""
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        line = f"env {exports} {shlex.join(command)}; echo EXIT=$?; sleep 600"
        self("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), line)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "top")

    def wait_for(self, check: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if check(screen):
                return screen
            time.sleep(0.2)
        size = self("display-message", "-p", "-t", "top", "#{pane_width}x#{pane_height}").strip()
        raise AssertionError(f"the screen ({size}) never showed {what}:\n{screen}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        if IN_CI:
            pytest.fail("tmux is not installed (.ci/run installs it; `make tools` does too)", pytrace=False)
        pytest.skip("tmux is not installed (`make tools`)")
    session = Tmux()
    yield session
    session.kill()


def _figures(screen: str) -> bool:
    return all(
        re.search(pattern, screen)
        for pattern in (
            r"\bonline\s+3\b",
            r"\bstale\s+2\b",
            r"\boffline\s+4\b",
            r"\brevoked\s+1\b",
            r"\btotal\s+10\b",
            r"pending now\s+2\b",
            r"push queue\s+1\b",
            r"Went offline in the last hour: 2",
            r"dev_off_10m",
        )
    )


def _row_of(screen: str, word: str) -> int:
    return next(i for i, line in enumerate(screen.splitlines()) if word in line)


def _exit_status(tmux: Tmux) -> str:
    screen = tmux.wait_for(lambda s: "EXIT=" in s, "nexmdm top exiting", timeout=15)
    return screen.split("EXIT=", 1)[1].split()[0]


def _start(tmux: Tmux, cli: Cli, width: int = 140, height: int = 40) -> None:
    env = {"NEXMDM_DATA_DIR": cli.env["NEXMDM_DATA_DIR"]}
    tmux.start([NEXMDM, "--database-url", cli.url, "top", "--interval", "0.5"], env, width, height)


def test_live_screen_resize_and_q(tmux: Tmux, cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    _start(tmux, cli)
    wide = tmux.wait_for(_figures, "the seeded fleet's figures")
    assert "q quits" in wide
    assert _row_of(wide, "Fleet") == _row_of(wide, "Push and ack")  # four panels side by side

    tmux("resize-window", "-t", "top", "-x", "80", "-y", "50")
    medium = tmux.wait_for(
        lambda s: _figures(s) and _row_of(s, "Commands") > _row_of(s, "Fleet"), "two rows of panels at 80 columns"
    )
    assert max(len(line.rstrip()) for line in medium.splitlines()) <= 80

    tmux("send-keys", "-t", "top", "q")
    assert _exit_status(tmux) == "0"


def test_ctrl_c_exits_cleanly(tmux: Tmux, cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    _start(tmux, cli)
    tmux.wait_for(_figures, "the seeded fleet's figures")
    tmux("send-keys", "-t", "top", "C-c")
    status = _exit_status(tmux)
    assert status == "0", (status, tmux.screen())
    assert "Traceback" not in tmux.screen()
