"""Selector terms on the reported inventory, against a known fleet, on both databases.

Null and absent follow the label rules: ``!=``, ``notin`` and ``!@app`` match a device without the app or
field (a3 reported no apps and no api level, a4 never reported); ``=``, ``in`` and comparisons never do.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.devices import selectors
from core.devices.listing import list_devices
from core.inventory.document import check_report
from core.inventory.store import put_inventory
from tests.support.fleet import seed_fleet
from tests.support.inventory import app, body

#: device -> (device fields, apps); a4 has no inventory
INVENTORIES: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "a1": (
        {"manufacturer": "samsung", "api_level": 34, "security_patch": "2026-06-01"},
        [app("com.acme.pos", 4200), app("com.android.chrome", 100)],
    ),
    "a2": (
        {"manufacturer": "Google", "api_level": 30, "security_patch": "2025-12-01"},
        [app("com.acme.pos", 4100)],
    ),
    "a3": ({"model": "unknown"}, []),
    "a5": ({"manufacturer": "SAMSUNG", "api_level": 33}, [app("com.evil.game", 1)]),
    "r1": ({"manufacturer": "samsung", "api_level": 34}, [app("com.acme.pos", 4000)]),  # revoked: never matches
}

CASES = [
    ("@app(com.acme.pos)", "a1 a2"),
    ("!@app(com.acme.pos)", "a3 a4 a5"),
    ("@app(com.acme.pos)<4200", "a2"),
    ("@app(com.acme.pos)<=4100", "a2"),
    ("@app(com.acme.pos)>4100", "a1"),
    ("@app(com.acme.pos)>=4200", "a1"),
    ("@app(com.acme.pos)=4100", "a2"),
    ("@app(com.acme.pos)==4100", "a2"),
    ("@app(com.acme.pos)!=4100", "a1 a3 a4 a5"),
    ("!@app(com.evil.game)", "a1 a2 a3 a4"),
    ("@app(com.nobody.has)", ""),
    ("@api_level>=33", "a1 a5"),
    ("@api_level<33", "a2"),
    ("@api_level=30", "a2"),
    ("@api_level!=30", "a1 a3 a4 a5"),
    ("@api_level in (30, 34)", "a1 a2"),
    ("@api_level notin (30)", "a1 a3 a4 a5"),
    ("@security_patch<2026-06-01", "a2"),
    ("@security_patch>=2026-06-01", "a1"),
    ("@manufacturer=samsung", "a1 a5"),
    ("@manufacturer!=samsung", "a2 a3 a4"),
    ("store=42,@app(com.acme.pos)<4200", "a2"),
    ("@app(com.acme.pos),!@app(com.android.chrome)", "a2"),
]


@pytest.fixture
def fleet(session_factory: sessionmaker[Session], settings: Settings) -> sessionmaker[Session]:
    seed_fleet(session_factory)
    with session_factory.begin() as db:
        for device_id, (fields, apps) in INVENTORIES.items():
            put_inventory(db, device_id, check_report(body(device=fields, apps=apps)), settings)
    return session_factory


def test_inventory_terms_against_a_known_fleet(fleet: sessionmaker[Session], settings: Settings) -> None:
    with fleet() as db:
        for selector, expected in CASES:
            found = [d["device_id"] for d in list_devices(db, settings, selector=selector, limit=100)]
            assert found == expected.split(), selector


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("@app(nodots)", "a package name"),
        ("@app(com.a.b)<x", "version code"),
        ("@app(com.a.b)<-1", "whole number"),
        ("@app com.a.b", "'(' after @app"),
        ("@app(com.a.b", "')'"),
        ("!@app(com.a.b)>1", "',' or the end"),
        ("@api_level=abc", "@api_level"),
        ("@security_patch<2026-13-01", "YYYY-MM-DD"),
        ("@manufacturer<samsung", "'=', '!=', 'in' or 'notin'"),
    ],
)
def test_malformed_inventory_terms_say_what_was_expected(selector: str, message: str) -> None:
    with pytest.raises(selectors.InvalidSelector) as caught:
        selectors.parse(selector)
    assert message in caught.value.message
