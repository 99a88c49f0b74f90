"""The action catalogue: every built-in action's payload and result schema, from a table of valid and invalid
values; an operator's own actions (untyped, or typed by a schema file); docs/actions.md generated from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.base.errors import InvalidArgument
from core.base.settings import Settings
from core.commands.action_schemas import BUILTIN, ERROR_CODES
from core.commands.catalogue import InvalidPayload, InvalidResult, catalogue_for, is_destructive
from core.commands.catalogue_doc import render_markdown
from core.commands.results import check_answer

FIX = {"lat": 52.52, "lon": 13.405, "accuracy_m": 12.5, "fixed_at": "2026-01-02T10:00:00Z"}

#: action -> (valid payloads, (invalid payload, the JSON path named) ...)
PAYLOADS: dict[str, tuple[list[Any], list[tuple[Any, str]]]] = {
    "ping": ([None, {}], [({"x": 1}, "payload")]),
    "sync": ([None, {}], [({"now": True}, "payload")]),
    "reboot": ([None], [({"force": True}, "payload")]),
    "lock": ([None, {"message": "Return to store 7"}],
             [({"message": 7}, "payload.message"), ({"msg": "x"}, "payload")]),
    "ring": ([{"seconds": 1}, {"seconds": 300}],
             [(None, "payload"), ({"seconds": 0}, "payload.seconds"), ({"seconds": 301}, "payload.seconds"),
              ({"seconds": "5"}, "payload.seconds")]),
    "locate": ([None], [({"high_accuracy": True}, "payload")]),
    "install_apk": ([{"build_id": 3}], [({}, "payload"), ({"build_id": 0}, "payload.build_id"),
                                       ({"build_id": 1.5}, "payload.build_id")]),
    "uninstall_app": ([{"package": "com.acme.pos"}], [({"package": "acme"}, "payload.package"),
                                                      ({"package": "com.1acme"}, "payload.package")]),
    "clear_app_data": ([{"package": "com.acme.pos_2"}], [({}, "payload"), ({"package": 5}, "payload.package")]),
    "update_agent": ([{"build_id": 12}], [({"build_id": -1}, "payload.build_id")]),
    "lost_mode": ([{"message": "Call us", "phone": "+49 30 1234567"}, {"message": "Call us"}],
                  [({"phone": "+4930"}, "payload"), ({"message": ""}, "payload.message"),
                   ({"message": "x", "phone": "call me"}, "payload.phone")]),
    "lost_mode_off": ([None], [({"message": "x"}, "payload")]),
    "wipe": ([{"reason": "stolen"}, {"reason": "retired", "keep_sd_card": True}],
             [(None, "payload"), ({"reason": "x", "keep_sd_card": "yes"}, "payload.keep_sd_card")]),
}  # fmt: skip

#: action -> (valid results, (invalid result, path) ...)
RESULTS: dict[str, tuple[list[Any], list[tuple[Any, str]]]] = {
    "ping": ([None, {}, {"uptime_s": 5}], []),
    "locate": ([FIX, FIX | {"lat": -90, "lon": 180, "provider": "gps"}],
               [(None, "result"), ({**FIX, "lat": 91}, "result.lat"),
                ({**FIX, "fixed_at": "yesterday"}, "result.fixed_at"),
                ({k: v for k, v in FIX.items() if k != "accuracy_m"}, "result"),
                ({**FIX, "accuracy_m": -1}, "result.accuracy_m")]),
    "install_apk": ([{}, {"version_code": 42, "package": "com.acme.pos"}],
                    [({"version_code": "42"}, "result.version_code")]),
    "lost_mode": ([{}, {"location": FIX}], [({"location": {**FIX, "lon": 200}}, "result.location.lon"),
                                            ({"location": {**FIX, "fixed_at": "2999-01-01T00:00:00Z"}},
                                             "result.location.fixed_at")]),
    "wipe": ([None, {}], []),
}  # fmt: skip


def test_every_builtin_action_is_in_the_tables() -> None:
    assert set(PAYLOADS) == set(BUILTIN) == set(catalogue_for().names())
    assert {"lock", "ring", "locate", "install_apk", "lost_mode", "wipe"} <= set(RESULTS) | set(PAYLOADS)


@pytest.mark.parametrize(
    ("action", "payload"), [(a, p) for a, (valid, _) in PAYLOADS.items() for p in valid], ids=lambda v: str(v)
)
def test_valid_payloads_pass(action: str, payload: Any) -> None:
    assert catalogue_for().check_command(action, payload).name == action


@pytest.mark.parametrize(
    ("action", "payload", "path"),
    [(a, p, path) for a, (_, invalid) in PAYLOADS.items() for p, path in invalid],
    ids=lambda v: str(v),
)
def test_invalid_payloads_name_their_json_path(action: str, payload: Any, path: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        catalogue_for().check_command(action, payload)
    assert caught.value.field == path and caught.value.code == "invalid_payload"
    assert caught.value.message.startswith(f"{action} payload at $")


@pytest.mark.parametrize(
    ("action", "result"), [(a, r) for a, (valid, _) in RESULTS.items() for r in valid], ids=lambda v: str(v)
)
def test_valid_results_pass(action: str, result: Any) -> None:
    answer = check_answer(None, action, "acked", result, None)
    declared = BUILTIN[action][2]["properties"]
    assert answer.result == (None if result is None else {k: v for k, v in result.items() if k in declared})


@pytest.mark.parametrize(
    ("action", "result", "path"),
    [(a, r, path) for a, (_, invalid) in RESULTS.items() for r, path in invalid],
    ids=lambda v: str(v),
)
def test_invalid_results_name_their_json_path(action: str, result: Any, path: str) -> None:
    with pytest.raises(InvalidResult) as caught:
        check_answer(None, action, "acked", result, None)
    assert caught.value.field == path


def test_error_codes_belong_to_failures_from_the_fixed_list() -> None:
    for code in ERROR_CODES:
        assert check_answer(None, "install_apk", "failed", None, code).error_code == code
    assert check_answer(None, "install_apk", "failed", None, None).error_code is None
    for status, result, code, field in (
        ("failed", None, "DISK_FULL", "error_code"),
        ("failed", None, "timeout", "error_code"),
        ("acked", None, "TIMEOUT", "error_code"),
        ("failed", {}, "TIMEOUT", "result"),
        ("acked", [1], None, "result"),
        ("acked", {"x": "y" * 20000}, None, "result"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            check_answer(None, "ping", status, result, code)
        assert caught.value.field == field, (status, result, code)


def test_unknown_actions_are_refused() -> None:
    for name in ("selfdestruct", "Ring", "", "x" * 40):
        with pytest.raises(InvalidArgument) as caught:
            catalogue_for().check_command(name, None)
        assert caught.value.field == "action"


def test_an_operators_own_actions_are_untyped_unless_a_file_gives_schemas(tmp_path: Path) -> None:
    settings = Settings(database_url="sqlite://", actions=("acme_kiosk", "acme_report", "lock"))
    catalogue = catalogue_for(settings)
    assert catalogue.names()[-2:] == ("acme_kiosk", "acme_report") and catalogue.actions["lock"].builtin
    untyped = catalogue.actions["acme_report"]
    assert not untyped.typed and not untyped.builtin
    catalogue.check_command("acme_report", {"anything": [1, {"goes": True}]})
    assert check_answer(settings, "acme_report", "acked", {"free": "form"}, None).result == {"free": "form"}
    with pytest.raises(InvalidArgument, match="JSON object"):
        catalogue.check_command("acme_report", [1])  # type: ignore[arg-type]

    schemas = tmp_path / "actions.json"
    kiosk = {
        "summary": "Switch the kiosk mode",
        "payload_schema": {"type": "object", "properties": {"mode": {"enum": ["day", "night"]}}, "required": ["mode"]},
        "result_schema": {"type": "object", "properties": {"mode": {"type": "string"}}, "required": ["mode"]},
        "destructive": True,
        "least_role": "admin",
    }
    schemas.write_text(json.dumps({"acme_kiosk": kiosk}))
    typed = Settings(database_url="sqlite://", actions=("acme_kiosk",), action_schemas=str(schemas))
    action = catalogue_for(typed).actions["acme_kiosk"]
    assert action.typed and action.destructive and action.least_role == "admin"
    assert is_destructive("acme_kiosk", typed) and is_destructive("wipe") and not is_destructive("lock")
    assert not is_destructive("acme_kiosk", settings) and not is_destructive("nope")
    catalogue_for(typed).check_command("acme_kiosk", {"mode": "night"})
    with pytest.raises(InvalidPayload, match=r"\$.mode"):
        catalogue_for(typed).check_command("acme_kiosk", {"mode": "dusk"})
    with pytest.raises(InvalidResult):
        check_answer(typed, "acme_kiosk", "acked", {}, None)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ('{"acme_kiosk": {"payload_schema": {"type": "object", "minProperties": "two"}}}', "not a JSON Schema"),
        ('{"acme_kiosk": {"payload_schema": {"type": "array"}}}', '"type": "object"'),
        ('{"acme_kiosk": {"colour": 1}}', "unknown key"),
        ('{"acme_kiosk": {"least_role": "viewer"}}', "least_role"),
        ('{"acme_other": {}}', "not in NEXMDM_ACTIONS"),
    ],
)
def test_a_bad_schema_file_is_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InvalidArgument, match=message):
        catalogue_for(Settings(database_url="sqlite://", actions=("acme_kiosk",), action_schemas=str(path)))


def test_docs_actions_md_is_generated_from_the_schemas() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "actions.md"
    assert doc.read_text(encoding="utf-8") == render_markdown(), "run: python -m core.commands.catalogue_doc"
    for name in BUILTIN:
        assert f"### `{name}`" in render_markdown()
    for code in ERROR_CODES:
        assert f"| `{code}` |" in render_markdown()
