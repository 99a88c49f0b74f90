"""Profiles at scale (issue 24): 100,000 devices and 20 profiles with overlapping selectors on PostgreSQL.

Figures: ``profiles plan`` of a fleet-wide change; applying it (every device's effective hash moves, set-based)
beside the floor of one raw ``UPDATE devices SET effective_hash = ...`` of every row, same run; the sweep of
the whole fleet (after enrolling it) and of 1,000 devices whose labels changed; one sweep round that ends
the grace of a tenth of the fleet (``device.noncompliant`` for a batch of them); ``nexmdm compliance`` by
state, profile and reason, with 90 % of the fleet reported. Goals (issue 24): plan < 2 s, apply < 10 s,
compliance < 500 ms.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from bench.bench_campaigns import _seed
from bench.common import Figure, pg_database
from core.base.settings import Settings
from core.events import webhooks
from core.events.audit import Actor
from core.profiles import compliance, effective, grace, store
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


def _reports(engine: Any) -> None:
    """Status reports on the current hash from 90 % of the fleet (70 % compliant, 20 % noncompliant), stored
    on the devices as a report stores them; a tenth of the fleet past its grace (3,000 never reported)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO device_compliance (device_id, reported_hash, state, reasons, items, reported_at, "
                "changed_at) SELECT id, effective_hash, CASE WHEN right(id, 2)::int < 70 THEN 'compliant' "
                "ELSE 'noncompliant' END, CASE WHEN right(id, 2)::int < 70 THEN ',' ELSE ',APP_NOT_UPDATED,' END, "
                "'[]', now(), now() FROM devices WHERE right(id, 2)::int < 90"
            )
        )
        conn.execute(
            text(
                "UPDATE devices d SET compliance_state = c.state, compliance_reasons = c.reasons "
                "FROM device_compliance c WHERE c.device_id = d.id"
            )
        )
        conn.execute(  # 7,000 reported on an older hash, 3,000 never reported: past their grace
            text(
                "UPDATE devices SET effective_since = now() - interval '1 hour', compliance_state = 'pending' "
                "WHERE right(id, 2)::int >= 80 AND right(id, 2)::int < 90 AND right(id, 3)::int < 700 "
                "OR right(id, 2)::int >= 97"
            )
        )


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
        _reports(engine)
        with factory.begin() as db:  # the grace of a tenth of the fleet ends: one sweep round
            webhooks.add_endpoint(db, url="https://hooks.example.com/bench", events=["device.noncompliant"])
        with factory.begin() as db:
            started = time.perf_counter()
            moved = grace.expire(db, settings)
            figures.append(_fig(f"grace expiry: one sweep round, {moved:,} devices", time.perf_counter() - started))
        with engine.connect() as conn:  # what autovacuum does on a live fleet
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM (ANALYZE)"))
        for by in ("state", "profile", "reason"):
            with factory() as db:
                started = time.perf_counter()
                compliance.summary(db, settings, by=by)
                figures.append(_fig(f"nexmdm compliance --by {by}", time.perf_counter() - started))
        engine.dispose()
    return figures, None


if __name__ == "__main__":
    for figure in run()[0]:
        print(f"{figure.name}: {figure.value:,.0f} {figure.unit}")
