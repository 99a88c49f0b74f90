"""``nexmdm demo`` end to end, as ``make demo`` runs it (fewer devices in the first phase): real server
processes on a throwaway SQLite database, simulated devices, the rollout, the profile rolled out in two
waves and its compliance."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_ends_with_the_galaxy_a10s_noncompliant() -> None:
    env = os.environ | {"COLUMNS": "140", "NO_COLOR": "1"}
    run = "from nexmdm_cli.main import run; run()"
    result = subprocess.run(
        [sys.executable, "-c", run, "demo", "--devices", "5", "--duration", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Profile demo-shops is at version 1, rolling out to 24 devices in 2 waves of 12" in out
    # the profile rollout ends: every device moved and decided (the Galaxy A10s failed, within the gate)
    rollout = re.search(r"completed: (\d+)/24 compliant · (\d+) failed · 0 awaiting compliance · 0 held", out)
    assert rollout is not None, out
    by_reason = out[out.index("nexmdm compliance --by reason") :]
    # every device reported on the profile; the Galaxy A10s that could not install are APP_NOT_UPDATED
    assert re.search(r"noncompliant (\d+) \(\d+%\), pending 0 \(0%\), unknown 0 \(0%\)", by_reason), by_reason
    noncompliant = re.search(r"APP_NOT_UPDATED\s*│\s*(\d+)", by_reason)
    assert noncompliant is not None and int(noncompliant.group(1)) > 0, by_reason
    by_model = by_reason[by_reason.index("--by model") :]
    galaxy = re.search(r"Galaxy A10\s*│\s*0\s*│\s*(\d+)\s*│", by_model)
    assert galaxy is not None and galaxy.group(1) == noncompliant.group(1), by_model  # all of them A10s
    assert int(rollout.group(2)) >= int(noncompliant.group(1))  # those devices failed the rollout
