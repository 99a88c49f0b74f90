"""Selector grammar: each valid term against a known fleet, on both databases; invalid ones with positions."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.base.settings import Settings
from core.base.versions import version_key
from core.devices import selectors
from tests.support.fleet import seed_fleet

VALID = [
    ("", {"a1", "a2", "a3", "a4", "a5"}),
    ("all", {"a1", "a2", "a3", "a4", "a5"}),
    ("store=42", {"a1", "a2"}),
    ("store==42", {"a1", "a2"}),
    ("store!=42", {"a3", "a4", "a5"}),
    ("store in (7, 42)", {"a1", "a2", "a3", "a4"}),
    ("store notin (42)", {"a3", "a4", "a5"}),
    ("ring", {"a1"}),
    ("!ring", {"a2", "a3", "a4", "a5"}),
    ("acme.io/ring=beta", {"a3"}),
    ("empty=", {"a4"}),
    ("store=42,ring=canary", {"a1"}),
    ("@state=online", {"a1", "a5"}),
    ("@state=stale", {"a2"}),
    ("@state=offline", {"a3", "a4"}),
    ("@state!=online", {"a2", "a3", "a4"}),
    ("@state in (stale, offline)", {"a2", "a3", "a4"}),
    ("@state notin (offline)", {"a1", "a2", "a5"}),
    ("store=42,@state=offline", set()),
    ("@agent_version<2.0.5", {"a1", "a3"}),
    ("@agent_version>=2.0.10", {"a2", "a5"}),
    ("@agent_version>2.1.0", set()),
    ("@agent_version<=2.1.0", {"a1", "a2", "a3", "a5"}),
    ("@agent_version<1.9.2", {"a3"}),
    ("@agent_version=beta", {"a4"}),
    ("@agent_version!=beta", {"a1", "a2", "a3", "a5"}),
    ('@model="Pixel 8"', {"a2"}),
    ('@model!="Pixel 8"', {"a1", "a3", "a4", "a5"}),
    ("@battery_pct>=30", {"a1"}),
    ("@battery_pct<30", {"a2"}),
    ("@plugged=true", {"a4"}),
    ("@plugged!=true", {"a1", "a2", "a3", "a5"}),
    ("@network_type=wifi", {"a5"}),
    ("@os_version in (14)", set()),
]

INVALID = [
    ("store in 42", 9, "'('"),
    ("store in (42", 12, "',' or ')'"),
    ("@color=red", 0, "unknown field"),
    ("@state=dead", 6, "online, stale, offline"),
    ("@battery_pct>x", 12, "integer 0-100"),
    ("@model<x", 6, "'=', '!=', 'in' or 'notin'"),
    ("@agent_version<beta", 14, "needs a version"),
    ("Store=1", 0, "not a label key"),
    ("a b", 2, "'=', '!=', 'in', 'notin', ',' or the end"),
    (",", 0, "a label key"),
    ("a=1,", 4, "a label key"),
    ('@model="x', 7, "unterminated"),
    ("a=b c", 4, "',' or the end"),
    ("a=#", 2, "unexpected character"),
    ("!@state", 1, "label key after '!'"),
    ("all,a", 0, "not a label key"),
    ("x in (" + ",".join(str(i) for i in range(65)) + ")", None, "at most 64 values"),
    (",".join(f"k{i}" for i in range(33)), None, "at most 32 terms"),
    ("k=" + "v" * 1100, None, "at most 1024 bytes"),
    ('@model="a\x00b"', 9, "control character U+0000"),  # issue #21: a 500 on PostgreSQL
    ('@model="\x1b[31mred"', 8, "control character U+001B"),
    ("store=42,\x9b31m", 9, "control character U+009B"),
    ("store=42,\tring=canary", 9, "control character U+0009"),
    ("store=\u202e24", 6, "control character U+202E"),
]


@pytest.fixture
def fleet(session_factory: sessionmaker[Session]) -> None:
    seed_fleet(session_factory)


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_selectors_match_the_known_fleet(
    fleet: None, db: Session, settings: Settings, text: str, expected: set[str]
) -> None:
    ids = set(db.execute(selectors.matching_ids(selectors.parse(text), settings)).scalars())
    assert ids == expected


@pytest.mark.parametrize(("text", "position", "message"), INVALID)
def test_invalid_selectors_say_where_and_what_was_expected(text: str, position: int | None, message: str) -> None:
    with pytest.raises(selectors.InvalidSelector) as err:
        selectors.parse(text)
    assert message in err.value.message
    assert err.value.code == "invalid_selector"
    if position is not None:
        assert err.value.position == position, err.value.message


def test_versions_sort_numerically() -> None:
    order = ["1.9.2-alpha", "1.9.2-rc1", "1.9.2", "1.10.0", "2", "2.0.1", "10.0"]
    keys = [version_key(v) for v in order]
    assert keys == sorted(keys)
    assert version_key("2.1") == version_key("2.1.0") == version_key("v2.1.0+build7")
    assert version_key("beta") is None and version_key("1..2") is None
