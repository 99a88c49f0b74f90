"""Shared plumbing for the benchmarks: throwaway databases, timing, result tables."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import create_engine, text

from core.storage.migrations import alembic_config

PG_ADMIN_URL = os.environ.get("NEXMDM_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@dataclass
class Figure:
    """One measured figure beside its baseline from the same run."""

    group: str
    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    goal_ratio: float | None = None  # value / baseline must reach this (None: informational)
    extra: dict[str, Any] = field(default_factory=dict)
    below: float | None = None  # or: value must stay under this (latency, memory, seconds)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.below is not None:
            return self.value < self.below
        if self.goal_ratio is None or self.ratio is None:
            return None
        return self.ratio >= self.goal_ratio

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio, "met": self.met}


@contextmanager
def pg_database(prefix: str = "nexmdm_bench") -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        command.upgrade(alembic_config(url), "head")
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def sqlite_database(folder: Path) -> Iterator[str]:
    path = folder / f"bench-{uuid.uuid4().hex[:8]}.db"
    url = f"sqlite:///{path}"
    command.upgrade(alembic_config(url), "head")
    try:
        yield url
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def rate(n: int, fn: Callable[[int], None]) -> tuple[float, list[float]]:
    """Run ``fn(i)`` for i in range(n); returns (operations per second, per-op latencies in ms)."""
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        latencies.append((time.perf_counter() - t0) * 1000)
    return n / (time.perf_counter() - start), latencies


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
