"""The scale fleet of ``bench.bench_inventory`` on PostgreSQL, seeded set-based: ``devices`` devices with an
inventory of ``APPS`` apps each (``device_apps``: ``devices × APPS`` rows), in four ``INSERT ... SELECT``
statements over ``generate_series``, then ``VACUUM (ANALYZE)`` (the bench server runs without autovacuum;
a live fleet's keeps the statistics and the visibility map current).

Every device's document is a function of its number, so a load generator can rebuild it (``document``)
and send a ``PATCH`` on the hash the server holds (``seed_hash``):

* ``com.acme.pos`` on every device: 4100 on 10 % of them, 4150 on 10 %, 4200 on the rest;
* 29 more packages on every device and 30 of a catalogue of 300 (330 packages in the fleet).
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Engine, text

APPS = 60
POS = "com.acme.pos"
COMMON = 29
CATALOGUE = 300
DEVICE = {"manufacturer": "samsung", "model": "Galaxy A10", "api_level": 30, "security_patch": "2026-05-01"}


def device_id(g: int) -> str:
    return f"sc{g:06d}"


def token(g: int) -> str:
    return f"nxd_scale_{g}"


def seed_hash(g: int) -> str:
    """The inventory hash the seed stores for device ``g`` (not the document's: the seed writes no JSON)."""
    return hashlib.sha256(f"seed{g}".encode()).hexdigest()


def pos_version(g: int) -> int:
    return 4100 if g % 10 == 0 else 4150 if g % 10 == 1 else 4200


def _package(g: int, j: int) -> str:
    k = j if j <= COMMON else COMMON + 1 + (g + (j - COMMON - 1) * 10) % CATALOGUE
    return f"com.vendor{k % 7}.app{k}"


def document(g: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Device ``g``'s held document as the seed wrote it: its device fields and its apps by package."""
    code = pos_version(g)
    name = f"{code // 1000}.{code % 1000 // 10}"
    apps: dict[str, dict[str, Any]] = {POS: {"version_code": code, "version_name": name}}
    for j in range(1, APPS):
        apps[_package(g, j)] = {"version_code": 100 + (g + j) % 5, "version_name": f"1.{(g + j) % 5}"}
    return dict(DEVICE), apps


_DEVICES = """
INSERT INTO devices (id, device_token_hash, enrolled_at, last_seen_at, inventory_hash, inventory_seen_at)
SELECT 'sc' || lpad(g::text, 6, '0'), encode(sha256(convert_to('nxd_scale_' || g, 'UTF8')), 'hex'),
       now(), now(), encode(sha256(convert_to('seed' || g, 'UTF8')), 'hex'), now()
FROM generate_series(0, :n - 1) AS g
"""
_INVENTORY = """
INSERT INTO device_inventory (device_id, hash, manufacturer, model, api_level, security_patch, serial_withheld,
                              app_count, reported_at, updated_at)
SELECT 'sc' || lpad(g::text, 6, '0'), encode(sha256(convert_to('seed' || g, 'UTF8')), 'hex'), 'samsung',
       'Galaxy A10', 30, DATE '2026-05-01', false, :apps, now(), now()
FROM generate_series(0, :n - 1) AS g
"""
#: ordered by the primary key, as a fleet reporting over time would roughly fill it
_APPS = f"""
INSERT INTO device_apps (device_id, package, version_code, version_name)
SELECT 'sc' || lpad(g::text, 6, '0'), '{POS}',
       CASE g % 10 WHEN 0 THEN 4100 WHEN 1 THEN 4150 ELSE 4200 END,
       CASE g % 10 WHEN 0 THEN '4.10' WHEN 1 THEN '4.15' ELSE '4.20' END
FROM generate_series(0, :n - 1) AS g
UNION ALL
SELECT 'sc' || lpad(g::text, 6, '0'), 'com.vendor' || (k % 7) || '.app' || k, 100 + (g + j) % 5, '1.' || ((g + j) % 5)
FROM generate_series(0, :n - 1) AS g, generate_series(1, {APPS - 1}) AS j,
     LATERAL (SELECT CASE WHEN j <= {COMMON} THEN j
                          ELSE {COMMON} + 1 + (g + (j - {COMMON} - 1) * 10) % {CATALOGUE} END AS k) AS p
"""


def seed(engine: Engine, n: int) -> None:
    """The fleet of ``n`` devices, then ``VACUUM (ANALYZE)``."""
    with engine.begin() as conn:
        conn.execute(text(_DEVICES), {"n": n})
        conn.execute(text(_INVENTORY), {"n": n, "apps": APPS})
        conn.execute(text(_APPS), {"n": n})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) devices, device_inventory, device_apps"))
