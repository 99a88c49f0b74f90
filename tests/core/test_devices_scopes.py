"""Scopes as stored (``core.devices.scopes``): one spelling per scope, and fields a scope may not name."""

from __future__ import annotations

import pytest

from core.base.errors import InvalidArgument
from core.devices import scopes, selectors


def _terms(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(t.name, t.op, t.values) for t in selectors.parse(text).terms]


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("store = 42", "store=42"),
        ("ring in (a, b),!hold", "ring in (a,b),!hold"),
        ('@model = "Pixel 7", store != 7', '@model="Pixel 7",store!=7'),
        ("@api_level>=30,@security_patch>=2024-01-01", "@api_level>=30,@security_patch>=2024-01-01"),
    ],
)
def test_the_stored_spelling_parses_back_to_the_same_terms(written: str, stored: str) -> None:
    text = scopes.canonical(selectors.parse(written))
    assert text == stored
    assert _terms(text) == _terms(written)


@pytest.mark.parametrize(
    "scope",
    [
        "@state=online",
        "@compliance=compliant",
        "@noncompliant(APP_NOT_INSTALLED)",
        "@battery_pct>50",
        "@plugged=true",
        "@network_type=wifi",
        "store=42,@lost=false",  # a scoped operator's lost-mode command would move a device out
        "@app(com.acme.pos)",  # ... and an uninstall (it was stored as "@app", its package lost: no key could use it)
        "!@app(com.acme.pos)",
        "@app(com.acme.pos)>=4200",
        "@agent_version>=2.0",  # ... and an agent update
    ],
)
def test_a_scope_cannot_name_what_changes_by_itself_or_by_its_own_commands(scope: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        scopes.check_scope(scope)
    assert refused.value.field == "scope" and "a scope cannot use @" in refused.value.message


def test_labels_and_what_the_hardware_reports_make_a_scope() -> None:
    assert scopes.check_scope('store = 42, @model = "Pixel 7"') == 'store=42,@model="Pixel 7"'
    assert scopes.check_scope("@manufacturer=samsung,@os_version=13") == "@manufacturer=samsung,@os_version=13"
