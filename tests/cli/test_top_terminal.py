"""``nexmdm top`` in a real terminal: tmux runs it, ``capture-pane`` reads the screen.

The numbers on the screen are those of a fleet the test seeded (narrowed by a selector, with campaigns
in flight); the screen follows a resize; ``q`` and Ctrl-C end it with exit code 0.
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
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from tests.support.cli import Cli
from tests.support.cli_fleet import seed_campaigns, seed_fleet, seed_labels
from tests.support.databases import IN_CI

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


def _start(tmux: Tmux, cli: Cli, *args: str, width: int = 140, height: int = 40) -> None:
    env = {"NEXMDM_DATA_DIR": cli.env["NEXMDM_DATA_DIR"]}
    tmux.start([NEXMDM, "--database-url", cli.url, "top", "--interval", "0.5", *args], env, width, height)


def test_live_screen_resize_and_q(tmux: Tmux, cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    _start(tmux, cli)
    wide = tmux.wait_for(_figures, "the seeded fleet's figures")
    assert "q quits" in wide
    assert _row_of(wide, "Fleet") == _row_of(wide, "Push and ack")  # four panels side by side
    # the compliance line under the panels (no profile yet: nothing is asked of the 9 unrevoked devices)
    assert _row_of(wide, "Fleet") < _row_of(wide, "Compliance compliant 9 (100%)") < _row_of(wide, "Went offline")

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


def test_live_screen_with_a_selector(tmux: Tmux, cli: Cli, session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)
    seed_labels(session_factory)
    _start(tmux, cli, "--selector", "store=1")
    patterns = (
        r"NexMDM top · selector store=1 ·",
        r"\bonline\s+1\b",
        r"\bstale\s+1\b",
        r"\boffline\s+2\b",
        r"\brevoked\s+1\b",
        r"\btotal\s+5\b",
        r"\bstored\s+3\b",  # dev_on_a's beats of the last minute
        r"Commands · all devices",
        r"pending now\s+2\b",  # fleet-wide
        r"Went offline in the last hour: 1",
        r"dev_off_10m",
    )
    screen = tmux.wait_for(lambda s: all(re.search(p, s) for p in patterns), "the figures of store=1")
    assert "dev_off_40m" not in screen
    tmux("send-keys", "-t", "top", "q")
    assert _exit_status(tmux) == "0"


def test_a_bad_selector_never_starts_the_screen(tmux: Tmux, cli: Cli) -> None:
    _start(tmux, cli, "--selector", "store in")
    assert _exit_status(tmux) == "2"
    screen = tmux.screen()
    assert "error: invalid selector at position" in screen and "Traceback" not in screen


def _campaign_cells(screen: str, campaign_id: str) -> list[str]:
    line = next(line for line in screen.splitlines() if campaign_id in line)
    return [cell.strip() for cell in line.split("│")[1:-1]]


def test_live_screen_with_campaigns(
    tmux: Tmux, cli: Cli, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    seed_fleet(session_factory)
    seed_labels(session_factory)
    ids = seed_campaigns(session_factory, settings)
    _start(tmux, cli)
    wide = tmux.wait_for(
        lambda s: "Campaigns in flight: 2" in s and ids["running"] in s and ids["paused"] in s, "the campaigns"
    )
    assert wide.index(ids["running"]) < wide.index(ids["paused"])  # newest first
    assert ids["done"] not in wide
    # campaign, action, status, wave, bar, done, then acked failed expired cancelled pending queued
    running, paused = _campaign_cells(wide, ids["running"]), _campaign_cells(wide, ids["paused"])
    assert running[1:4] == ["lock", "running", "1/2"] and running[4].startswith("━")
    assert running[5:] == ["2/4 50%", "1", "1", "0", "0", "0", "2"]
    assert paused[1:4] == ["sync", "paused", "1/1"] and paused[5:] == ["0/5 0%", "0", "0", "0", "0", "5", "0"]
    # the went-offline list keeps its place below them
    assert _row_of(wide, "Went offline in the last hour") > _row_of(wide, ids["paused"])

    tmux("resize-window", "-t", "top", "-x", "80", "-y", "50")
    medium = tmux.wait_for(
        lambda s: re.search(r"lock · running\s+wave 1/2", s) is not None, "two lines per campaign at 80 columns"
    )
    assert re.search(r"acked 1 · failed 1 · expired 0 · cancelled 0 · pending 0 · queued 2", medium)
    assert max(len(line.rstrip()) for line in medium.splitlines()) <= 80
    tmux("send-keys", "-t", "top", "q")
    assert _exit_status(tmux) == "0"


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_selector_past_its_time_limit_keeps_the_last_figures(
    tmux: Tmux, cli: Cli, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """A refresh whose selector statement PostgreSQL cancels (here: it waits on a lock the test holds, past
    the 300 ms limit) shows why in the header and keeps the last figures; the next refresh recovers."""
    seed_fleet(session_factory)
    seed_labels(session_factory)
    env = {"NEXMDM_DATA_DIR": cli.env["NEXMDM_DATA_DIR"], "NEXMDM_SELECTOR_STATEMENT_TIMEOUT_MS": "300"}
    command = [NEXMDM, "--database-url", cli.url, "top", "--interval", "0.5", "--selector", "store=1"]
    tmux.start(command, env, 200, 40)
    figures = (r"\bonline\s+1\b", r"\btotal\s+5\b", r"pending now\s+2\b")
    tmux.wait_for(lambda s: all(re.search(p, s) for p in figures), "the figures of store=1")
    stalled = "selector query over 300 ms: narrow it (showing the last figures)"
    with engine.connect() as conn, conn.begin():
        conn.execute(text("LOCK TABLE devices IN ACCESS EXCLUSIVE MODE"))
        screen = tmux.wait_for(lambda s: stalled in s, "the time limit in the header")
        assert all(re.search(p, screen) for p in figures), screen
        assert "Traceback" not in screen and "EXIT=" not in screen
    tmux.wait_for(lambda s: stalled not in s and all(re.search(p, s) for p in figures), "a refresh that recovered")
    tmux("send-keys", "-t", "top", "q")
    assert _exit_status(tmux) == "0"
