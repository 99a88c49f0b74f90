"""Part 5: how fast the CLI starts, beside ``python -c pass`` measured in the same run.

``nexmdm --help`` must not import SQLAlchemy or Alembic (goal ≤ 0.25 s); ``nexmdm devices list`` on an
empty, migrated SQLite database imports SQLAlchemy Core (not the ORM, not the models), opens the database, checks its
migration and prints the empty fleet (goal ≤ 0.45 s). Each figure is the median of ``runs`` process
starts, interleaved so that a noisy moment hits every command alike.

The warm-up runs write the bytecode even where ``PYTHONDONTWRITEBYTECODE`` is set (as in this
machine's environment): an installed NexMDM has its bytecode (pip compiles it), and without it every start would
also compile the project's modules from source (0.03–0.05 s of ``devices list`` here), which no operator pays.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Figure

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: the issue's targets, in seconds
HELP_GOAL = 0.25
LIST_GOAL = 0.45


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def run(tmp: Path, *, runs: int = 15) -> tuple[list[Figure], dict[str, object]]:
    url = f"sqlite:///{tmp / 'startup.db'}"
    env = os.environ | {"NEXMDM_DATABASE_URL": url, "COLUMNS": "120"}
    nexmdm = str(BIN / "nexmdm")
    subprocess.run([nexmdm, "db", "upgrade"], env=env, capture_output=True, check=True)
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "nexmdm --help": [nexmdm, "--help"],
        "nexmdm devices list": [nexmdm, "devices", "list"],
    }
    warm = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for argv in commands.values():  # warm the file cache and write the bytecode
        _time(argv, warm)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            samples[name].append(_time(argv, env))
    median = {name: statistics.median(values) for name, values in samples.items()}
    floor = median["python -c pass"]
    figures = [
        Figure("cli start", "nexmdm --help", median["nexmdm --help"], "s", "python -c pass", floor, below=HELP_GOAL),
        Figure(
            "cli start",
            "nexmdm devices list (empty database)",
            median["nexmdm devices list"],
            "s",
            "python -c pass",
            floor,
            below=LIST_GOAL,
        ),
    ]
    details = {name: {"median_s": round(median[name], 4), "min_s": round(min(v), 4)} for name, v in samples.items()}
    return figures, details | {"runs": runs}
