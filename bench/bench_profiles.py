"""Profiles at scale (issue 24): 100,000 devices and 20 profiles with overlapping selectors on PostgreSQL.

Figures: ``profiles plan`` of a fleet-wide change; applying it (every device's effective hash moves, set-based)
beside the floor of one raw ``UPDATE devices SET effective_hash = ...`` of every row, same run; the sweep of
the whole fleet (after enrolling it) and of 1,000 devices whose labels changed; ``nexmdm compliance`` by
state and by profile. Goals (issue 24): plan < 2 s, apply < 10 s, compliance < 500 ms.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from bench.bench_campaigns import _seed
from bench.common import Figure, pg_database
from core.base.settings import Settings
from core.events.audit import Actor
from core.profiles import compliance, effective, store
from core.storage.engine import make_engine, make_session_factory

ACTOR = Actor("cli:bench@host")


def _fig(name: str, seconds: float) -> Figure:
    return Figure("profiles", name, seconds * 1000, "ms")


def _profiles() -> list[dict[str, Any]]:
    """20 profiles: a fleet-wide base, rings, and store ranges that overlap."""
    out: list[dict[str, Any]] = [
        {"name": "base", "priority": 0, "apps": [{"package": "com.acme.pos", "install": "required"}]},
        {"name": "canary", "selector": "ring=canary", "priority": 5, "settings": {"channel": "canary"}},
        {"name": "beta", "selector": "ring=beta", "priority": 6, "settings": {"beta": True}},
    ]
    for k in range(17):
        stores = ",".join(str(s) for s in range(k * 5, k * 5 + 12))  # overlapping ranges
        out.append(
            {
                "name": f"stores-{k}",
                "selector": f"store in ({stores})",
                "priority": 10 + k,
                "settings": {f"s{k}": k, "wifi": {"ssid": f"s{k}"}},
            }
        )
    return out


def run(n: int = 100_000) -> tuple[list[Figure], object]:
    figures: list[Figure] = []
    with pg_database() as url:
        engine = make_engine(url)
        settings = Settings(database_url=url)
        factory = make_session_factory(engine, settings)
        _seed(engine, n)
        started = time.perf_counter()
        for document in _profiles():
            with factory.begin() as db:
                store.apply(db, settings, document, ACTOR)
        figures.append(_fig("profiles: apply 20 overlapping profiles, first time", time.perf_counter() - started))
        changed = {
            **_profiles()[0],
            "apps": [{"package": "com.acme.pos", "install": "required", "min_version_code": 2}],
        }
        with factory() as db:
            started = time.perf_counter()
            planned = store.plan(db, settings, changed)
            figures.append(
                _fig(f"profiles plan, {planned['devices_changing']:,} devices change", time.perf_counter() - started)
            )
        with factory.begin() as db:
            started = time.perf_counter()
            store.apply(db, settings, changed, ACTOR)
        figures.append(_fig(f"profiles apply, {n:,} effective hashes move", time.perf_counter() - started))
        with engine.begin() as conn:
            started = time.perf_counter()
            conn.execute(text("UPDATE devices SET effective_hash = md5(id) || md5(id)"))
            figures.append(_fig(f"floor: one raw UPDATE of {n:,} devices' hash", time.perf_counter() - started))
            conn.rollback()
        for label, mark in (
            (f"sweep of the whole fleet ({n:,} devices marked, as after enrolling them all)", None),
            (
                "sweep of 1,000 devices whose labels changed",
                "UPDATE devices SET profile_stale = TRUE WHERE id < 'dev0001000'",
            ),
        ):
            if mark is not None:
                with engine.begin() as conn:
                    conn.execute(text(mark))
            with factory.begin() as db:
                started = time.perf_counter()
                effective.refresh_stale(db, settings)
            figures.append(_fig(label, time.perf_counter() - started))
        for by in ("state", "profile"):
            with factory() as db:
                started = time.perf_counter()
                compliance.summary(db, settings, by=by)
                figures.append(_fig(f"nexmdm compliance --by {by}", time.perf_counter() - started))
        engine.dispose()
    return figures, None


if __name__ == "__main__":
    for figure in run()[0]:
        print(f"{figure.name}: {figure.value:,.0f} {figure.unit}")
