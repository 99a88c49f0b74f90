"""What an inventory report costs the database: on PostgreSQL every write of a report is one statement
(whatever the number of apps; no executemany), a first report three statements in all, a PATCH four (its
lock, the held apps read once, the writes); on SQLite, where a statement costs no round trip, the same
rows. The rows themselves are pinned by tests/core/test_inventory.py on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.inventory.document import canonical_hash, check_delta, check_report
from core.inventory.store import patch_inventory, put_inventory
from core.models import DeviceApp, DeviceAppChange
from tests.support.databases import add_device
from tests.support.inventory import app, body

APPS = [app(f"com.vendor.app{i:02d}", 100 + i) for i in range(40)]


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[tuple[str, bool]]]:
    seen: list[tuple[str, bool]] = []

    def listen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append((statement.strip().split()[0].upper(), executemany))

    event.listen(engine, "before_cursor_execute", listen)
    yield seen
    event.remove(engine, "before_cursor_execute", listen)


def test_a_report_writes_in_one_statement_on_postgresql(
    session_factory: sessionmaker[Session], settings: Settings, statements: list[tuple[str, bool]], backend: str
) -> None:
    add_device(session_factory, "dev_001")
    statements.clear()
    with session_factory.begin() as db:
        put_inventory(db, "dev_001", check_report(body(apps=APPS)), settings)
    if backend == "postgresql":
        assert statements == [("SELECT", False), ("INSERT", False), ("WITH", False)]

    first = body(apps=APPS)
    changed = [app("com.vendor.app00", 200), *APPS[2:], app("org.new.one", 1)]  # app01 removed
    after = canonical_hash(first["device"], changed)
    delta = {
        "base_hash": first["hash"],
        "hash": after,
        "apps": {"upsert": [app("com.vendor.app00", 200), app("org.new.one", 1)], "remove": ["com.vendor.app01"]},
    }
    statements.clear()
    with session_factory.begin() as db:
        patch_inventory(db, "dev_001", check_delta(delta), settings)
    if backend == "postgresql":
        assert statements == [("SELECT", False), ("SELECT", False), ("WITH", False)]
    with session_factory() as db:
        held = {p: v for p, v in db.execute(select(DeviceApp.package, DeviceApp.version_code))}
        assert held == {a["package"]: a["version_code"] for a in changed}
        changes = db.execute(
            select(DeviceAppChange.package, DeviceAppChange.change, DeviceAppChange.to_version_code)
            .where(DeviceAppChange.change != "installed")
            .order_by(DeviceAppChange.id)
        ).all()
        assert [tuple(c) for c in changes] == [
            ("com.vendor.app00", "updated", 200),
            ("com.vendor.app01", "removed", None),
        ]
