"""Schemathesis against the app's own OpenAPI document (issue #7, item 4), on SQLite and PostgreSQL.

Every operation of the document is fuzzed (examples, coverage and fuzzing phases; valid and invalid
data) with every built-in check on: no 5xx, status codes, content types, headers and bodies as
documented, invalid data rejected, valid data accepted, calls without (or with wrong) credentials
refused. The stateful phase then chains operations through the links Schemathesis infers from the
document (enroll -> heartbeat with the new device token, dispatch -> get...). Requests go to
``create_app(settings)`` in process through Schemathesis' ASGI transport, with the lifespan running.

Each call carries the credential its operation declares (``enrollmentToken``, ``deviceToken`` or
``adminKey`` in the document's security requirements); ``ignored_auth`` removes and breaks it to check
that the server refuses.

The schema is built when the module is imported, from the document the app generates (no database
needed for that); ``test_the_served_document_is_the_fuzzed_one`` checks that it is the one the server
serves. (``schemathesis.pytest.from_fixture`` would read it from the running app, but it sets
``Node._nodeid``, which pytest 9.2 no longer has.)
"""

from __future__ import annotations

import copy
import io
import itertools
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session, sessionmaker

from core import campaigns
from core.access import keys as admin_keys
from core.apk import builds as apk
from core.base.errors import InvalidArgument
from core.base.labels import KEY_RE, VALUE_RE
from core.base.settings import Settings
from core.commands import dispatches
from core.commands.catalogue import catalogue_for
from core.devices.selectors import FIELDS, InvalidSelector
from core.devices.selectors import parse as parse_selector
from core.enrollment import tokens as credentials
from core.enrollment.enroll import enroll_device
from core.inventory.document import canonical_hash
from core.models import DeviceLabel
from core.profiles.document import UNSELECTABLE
from core.storage.types import utcnow
from nexmdm_api import create_app
from nexmdm_api.schemas_fleet import SCOPE_FORMAT, SELECTOR_FORMAT
from tests.support.fakes.apk import apk_bytes
from tests.support.inventory import APPS
from tests.support.inventory import body as inventory_body

SCHEMA_PATH = "/schema/openapi.json"
#: generated cases per operation in the fuzzing phase, and scenarios in the stateful phase (per backend)
MAX_EXAMPLES = 25
STATEFUL_EXAMPLES = 15
DEVICE_ID = "dev_fuzz"
#: generated positive cases per operation, and the share of them the server must accept (2xx)
POSITIVE_EXAMPLES = 20
ACCEPTANCE = 0.95


def _selectors() -> st.SearchStrategy[str]:
    """Selectors in the document's ``nexmdm-selector`` format, from core's own label syntax and field names.

    Their terms are the ones a device without that label or field value matches (``!key``, ``!=``, ``notin``),
    so that a campaign finds targets: which devices match is the fleet's state, not the document's.
    """
    key = st.from_regex(KEY_RE, fullmatch=True).filter(lambda k: k not in ("in", "notin", "all"))
    value = st.from_regex(VALUE_RE, fullmatch=True).map(lambda v: f'"{v}"')
    values = st.lists(value, min_size=1, max_size=3).map(lambda vs: f"({','.join(vs)})")
    free_fields = sorted(
        # a number or a date is not any string: those fields are compared to values of their own kind
        f"@{name}"
        for name, (_, allowed, _) in FIELDS.items()
        if allowed is None and name not in ("battery_pct", "api_level", "security_patch")
    )
    term = st.one_of(
        key.map(lambda k: f"!{k}"),
        st.tuples(key, value).map(lambda kv: f"{kv[0]}!={kv[1]}"),
        st.tuples(key, values).map(lambda kv: f"{kv[0]} notin {kv[1]}"),
        st.tuples(st.sampled_from(free_fields), value).map(lambda fv: f"{fv[0]}!={fv[1]}"),
        st.just("@state in (online,stale,offline)"),
    )
    return st.one_of(st.just("all"), st.lists(term, min_size=1, max_size=4).map(", ".join))


def _scopes() -> st.SearchStrategy[str]:
    """Scopes in the document's ``nexmdm-scope`` format: label terms that pick part of a fleet."""
    key = st.from_regex(KEY_RE, fullmatch=True).filter(lambda k: k not in ("in", "notin", "all"))
    value = st.from_regex(VALUE_RE, fullmatch=True).map(lambda v: f'"{v}"')
    term = st.tuples(key, value).map(lambda kv: f"{kv[0]}={kv[1]}")
    return st.lists(term, min_size=1, max_size=3).map(", ".join)


schemathesis.openapi.format(SELECTOR_FORMAT, _selectors())
schemathesis.openapi.format(SCOPE_FORMAT, _scopes())


def _document() -> dict[str, Any]:
    return create_app(Settings(database_url="sqlite://")).openapi_schema.to_schema()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(
    copy.deepcopy(DOCUMENT),
    config=schemathesis.Config.from_dict({"generation": {"mode": "all"}, "checks": {"enabled": True}}),
)
positive = schemathesis.openapi.from_dict(
    copy.deepcopy(DOCUMENT), config=schemathesis.Config.from_dict({"generation": {"mode": "positive"}})
)


def _hypothesis(max_examples: int) -> hypothesis_settings:
    return hypothesis_settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture
def fuzz_settings(settings: Settings) -> Settings:
    """Limits high enough that the fuzzer explores the API instead of hitting the rate limiters."""
    return settings.with_overrides(
        heartbeat_rate_per_minute=1_000_000, heartbeat_burst=1_000_000, auth_failure_limit=1_000_000
    )


@pytest.fixture
def secrets(engine: Engine, fuzz_settings: Settings, session_factory: sessionmaker[Session]) -> dict[str, str]:
    """By security scheme: an enrollment token, a device (with a pending command, in lost mode so that it
    may report fixes), an admin key; and one APK."""
    with session_factory.begin() as db:
        enrollment, _ = credentials.create_enrollment_token(db, uses=100_000)
        own, _ = credentials.create_enrollment_token(db, uses=1)
        admin, _ = admin_keys.create_admin_key(db, name="fuzz")
        device = enroll_device(db, enrollment_secret=own, device_id=DEVICE_ID)
        dispatches.create_command(db, fuzz_settings, request_id="cmd_fuzz", device_id=DEVICE_ID, action="ping")
        lost = {"message": "Return to store 7"}
        dispatches.create_command(
            db, fuzz_settings, request_id="cmd_lost", device_id=DEVICE_ID, action="lost_mode", payload=lost
        )
        dispatches.ack_command(db, device_id=DEVICE_ID, request_id="cmd_lost", status="completed")
        apk.add_build(db, fuzz_settings, source=io.BytesIO(apk_bytes()), version_code=1, version_name="1.0")
    return {"enrollmentToken": enrollment, "deviceToken": device["device_token"], "adminKey": admin}


@pytest.fixture
def campaign_id(secrets: dict[str, str], fuzz_settings: Settings, session_factory: sessionmaker[Session]) -> str:
    with session_factory.begin() as db:
        _, created = campaigns.create_campaign(
            db, fuzz_settings, idempotency_key="cmp_fuzz", action="ping", selector="all", waves={"size": 1}
        )
    return str(created["id"])


@pytest.fixture
def app(fuzz_settings: Settings, secrets: dict[str, str]) -> Litestar:
    return create_app(fuzz_settings)


def credentials_for(case: Any, secrets: dict[str, str], *, always: bool = False) -> dict[str, str]:
    """The ``Authorization`` header for the first security requirement the operation declares.

    None when Schemathesis generated one itself (a deliberately broken credential, for instance), and none
    when it made the headers invalid on purpose: a negative case may be one without its required
    ``Authorization``, which a credential added here would make valid again (and its 2xx a finding).
    ``always`` puts the credential in place of whatever was generated (positive data: a client has its key).
    """
    if always:
        return _credential(case, secrets)
    if any(name.lower() == "authorization" for name in case.headers or {}):
        return {}
    header = case.meta.components.get(ParameterLocation.HEADER) if case.meta is not None else None
    if header is not None and header.mode.is_negative:
        return {}
    return _credential(case, secrets)


def _credential(case: Any, secrets: dict[str, str]) -> dict[str, str]:
    for requirement in case.operation.definition.raw.get("security") or []:
        for name in requirement:
            return {"Authorization": f"Bearer {secrets[name]}"}
    return {}


#: what JSON Schema cannot say, by operation: the body fields (a pattern) whose 422 a schema-valid request may
#: still get (an APK must be a ZIP archive; a command payload is at most 4096 bytes serialized, without
#: control characters in its strings, and must match the schema of the action it goes with, which the document
#: gives as one of all the actions' schemas; an ack's result likewise, and its error_code belongs to a failure;
#: an inventory's hash must be its document's, a package appears once, a patch date is a real day; a PATCH on
#: another base is 409). ``positive_data_acceptance`` is replaced there by a narrower check.
_INVENTORY = r"hash|apps(\.upsert)?\[\d+\]\.package|apps\.remove|device(\.\w+)?|apps\.upsert"
_PAYLOAD = r"payload(\..+)?"  # the field, or a JSON path inside it (``payload.seconds``)
BEYOND_JSON_SCHEMA = {
    "POST /v1/apk/builds": "file",
    "POST /v1/devices/{device_id}/commands": _PAYLOAD,
    "POST /v1/campaigns": _PAYLOAD,
    "POST /v1/commands/{request_id}/ack": r"(result|error_code)(\..+)?",
    "PUT /v1/inventory": _INVENTORY,
    "PATCH /v1/inventory": _INVENTORY,
}


def validate(case: Any, response: Any, **kwargs: Any) -> None:
    field = BEYOND_JSON_SCHEMA.get(case.operation.label)
    if field is None:
        case.validate_response(response, **kwargs)
        return
    case.validate_response(response, excluded_checks=[positive_data_acceptance], **kwargs)
    if response.status_code == 422 and case.meta is not None and case.meta.generation.mode.is_positive:
        problem = response.json()
        assert len(problem["errors"]) == 1 and re.fullmatch(field, problem["errors"][0]["field"]), problem


@schema.parametrize()
@_hypothesis(MAX_EXAMPLES)
def test_every_operation(case: Any, app: Litestar, secrets: dict[str, str]) -> None:
    # the probes of some checks (ignored_auth...) go through the schema's own transport: point it at this app
    case.operation.app = case.operation.schema.app = app
    headers = credentials_for(case, secrets)
    validate(case, case.call(headers=headers), headers=headers)


def test_stateful(app: Litestar, secrets: dict[str, str]) -> None:
    schema.app = app

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            case.operation.app = case.operation.schema.app = app
            return {"headers": credentials_for(case, secrets)}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            validate(case, response, transport_kwargs=kwargs or None, recorder=self.recorder)

    Workflow.run(settings=_hypothesis(STATEFUL_EXAMPLES))


def test_the_served_document_is_the_fuzzed_one(app: Litestar) -> None:
    with TestClient(app) as client:
        response = client.get(SCHEMA_PATH)
    assert response.status_code == 200
    assert response.json() == DOCUMENT


@pytest.fixture(autouse=True)
def _no_lingering_lifespan() -> Iterator[None]:
    """Schemathesis keeps an app's lifespan running between requests; end it before the tables are emptied."""
    yield
    schemathesis.python.asgi.shutdown_lifespans()


#: path parameters filled with what exists, for the operations whose figure says something about their body
KNOWN_PATHS = {
    "PATCH /v1/devices/{device_id}/labels": {"device_id": DEVICE_ID},
    "GET /v1/devices/{device_id}/compliance": {"device_id": DEVICE_ID},
    "GET /v1/devices/{device_id}/effective-profile": {"device_id": DEVICE_ID},
    "POST /v1/campaigns/{campaign_id}/resume": {"campaign_id": None},  # the fixture's campaign, paused each time
}
#: operations that write labels: each case starts from a fleet without any (a device keeps at most 32)
LABEL_WRITES = {"PATCH /v1/devices/{device_id}/labels", "POST /v1/devices/labels"}


def _fill_in(case: Any, serial: int) -> None:
    """What a client knows or makes up rather than reads from the document, put into a generated case.

    Names and keys the server keeps unique (a second ``0`` is a 409 by design), the ids of devices that exist
    (``device_ids``, the heartbeat's own ``device_id``), and an APK's bytes (a ZIP archive; JSON Schema cannot
    say that) are the client's to supply: the rest of each request is as generated.
    """
    body = case.body if isinstance(case.body, dict) else {}
    label = case.operation.label
    if "Idempotency-Key" in (case.headers or {}):
        case.headers["Idempotency-Key"] = f"fuzz-{serial}"
    if label == "POST /v1/enroll" and "device_id" in body:
        body["device_id"] = f"fuzz-{serial}"
    if label == "POST /v1/heartbeat" and body.get("device_id") is not None:
        body["device_id"] = DEVICE_ID
    if label == "POST /v1/keys" and "name" in body:
        body["name"] = f"fuzz-{serial}"
    if label == "POST /v1/campaigns" and body.get("device_ids") is not None:
        body["device_ids"] = [DEVICE_ID]
    if label in ("POST /v1/campaigns", "POST /v1/devices/{device_id}/commands"):
        body["action"] = _action_for(body.get("action"), body.get("payload"))
    if label == "POST /v1/apk/builds":
        body.update(file=apk_bytes(), version_code=1000 + serial)
    if label in ("PUT /v1/inventory", "PATCH /v1/inventory"):
        _fill_in_inventory(label, body)
    if label == "POST /v1/location":  # a fix is taken before it is sent (the document says so in words)
        body["fixed_at"] = utcnow().isoformat()

    if label in ("POST /v1/profiles", "POST /v1/profiles/plan"):
        _fill_in_profile(body, serial)


def _fill_in_inventory(label: str, body: dict[str, Any]) -> None:
    """An agent's inventory report: integers as integers, the hash of what it sends (each package once), and
    for a PATCH the inventory it reported last (``HELD``, put before each case)."""
    body.update(_integers(body))  # JSON's 2.0 is the integer 2, an agent sends 2
    if label == "PUT /v1/inventory":  # an agent hashes what it sends; a package is listed once
        apps = list({a["package"]: a for a in body.get("apps", [])}.values())
        body.update(apps=apps, hash=canonical_hash(body.get("device", {}), apps))
    if label == "PATCH /v1/inventory":  # ... and knows what it reported last (HELD, put before each case)
        device = {**HELD["device"], **(body.get("device") or {})}
        apps = {a["package"]: a for a in HELD["apps"]}
        changes = body.get("apps") or {}
        upsert = {a["package"]: a for a in changes.get("upsert") or []}
        remove = [p for p in changes.get("remove") or [] if p not in upsert]
        changes.update(upsert=list(upsert.values()), remove=remove)
        for package in remove:
            apps.pop(package, None)
        apps.update(upsert)
        body.update(base_hash=HELD["hash"], hash=canonical_hash(device, list(apps.values())))


def _action_for(action: Any, payload: Any) -> Any:
    """A client sends a payload with the action it is for (the document offers every action's payload
    schema to every action): the generated action when its schema takes the payload, else the first that
    does."""
    catalogue = catalogue_for(Settings())
    fits = []
    for name, entry in catalogue.actions.items():
        try:
            entry.check_payload(payload)
        except InvalidArgument:
            continue
        fits.append(name)
    return action if action in fits or not fits else fits[0]


def _integers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers(v) for v in value]
    return value


#: the inventory the fuzzed device holds before each PATCH
HELD = inventory_body(apps=APPS)


def _fill_in_profile(body: dict[str, Any], serial: int) -> None:
    """An operator's profile: each package once, builds that exist (none here), no minimum for a blocked app,
    a selector a profile may use, and its own priority (a tie with another profile on a key is 409)."""
    apps = {}
    for app in body.get("apps") or []:
        app.pop("build", None)
        if app.get("install") == "blocked":
            app.pop("min_version_code", None)
        apps[app["package"]] = app
    body.update(apps=list(apps.values()), priority=serial)
    try:  # an operator writes a selector that parses (a date that is one), on what a profile may select
        parsed = parse_selector(body.get("selector"))
    except InvalidSelector:
        body["selector"] = ""
    else:
        if any(term.name in UNSELECTABLE for term in parsed.terms):
            body["selector"] = ""


def _fill_in_status(case: Any, session_factory: sessionmaker[Session]) -> None:
    """A device reports on the effective profile it was given, about that profile's items."""
    from core.events.audit import Actor
    from core.models import Device
    from core.profiles import effective as profile_effective
    from core.profiles import store as profiles
    from core.profiles.compliance import item_keys

    with session_factory.begin() as db:  # the same document again writes nothing
        profiles.apply(db, Settings(), {"name": "fuzz-all", "priority": -1, "settings": {"fuzz": 1}}, Actor("cli:fuzz"))
        profile_effective.refresh_device(db, Settings(), DEVICE_ID)
        digest = db.get(Device, DEVICE_ID).effective_hash  # type: ignore[union-attr]
        keys = item_keys(profile_effective.document_of(db, digest) or {})
    items = {item["key"]: item for item in case.body.get("items") or []}
    case.body.update(effective_hash=digest, items=[{**i, "key": k} for k, i in zip(keys, items.values(), strict=False)])


@pytest.mark.slow  # ~20 s a database: every operation, 20 cases each
def test_the_server_accepts_what_the_document_allows(
    app: Litestar, secrets: dict[str, str], campaign_id: str, session_factory: sessionmaker[Session], capsys: Any
) -> None:
    """Positive data only: on every operation without a path parameter to discover, >= 95 % answered 2xx.

    Operations with path parameters report their figure too; those in ``KNOWN_PATHS`` get real ids.
    """
    positive.app = app
    serial = itertools.count()
    admin = {"Authorization": f"Bearer {secrets['adminKey']}"}
    tally: dict[str, Counter[int]] = {}
    refusals: dict[str, str] = {}  # the first refusal per operation (a 404 is an id that does not exist)
    for result in positive.get_all_operations():
        operation = result.ok()
        known = KNOWN_PATHS.get(operation.label)
        if known is not None:
            known = {name: value or campaign_id for name, value in known.items()}
        statuses = tally.setdefault(operation.label, Counter())

        @given(case=operation.as_strategy(path_parameters=known))
        @_hypothesis(POSITIVE_EXAMPLES)
        def call(case: Any) -> None:
            case.operation.app = case.operation.schema.app = app
            _fill_in(case, next(serial))
            if case.operation.label in LABEL_WRITES:
                with session_factory.begin() as db:
                    db.execute(delete(DeviceLabel))
            if case.operation.label == "PATCH /v1/inventory":
                held = positive["/v1/inventory"]["PUT"].Case(body=copy.deepcopy(HELD))
                assert held.call(headers=credentials_for(held, secrets, always=True)).status_code == 200
            if case.operation.label.endswith("/resume"):
                paused = positive["/v1/campaigns/{campaign_id}/pause"]["POST"].Case(path_parameters=known)
                assert paused.call(headers=admin).status_code == 200
            if case.operation.label == "POST /v1/profile/status":
                _fill_in_status(case, session_factory)
            response = case.call(headers=credentials_for(case, secrets, always=True))
            statuses[response.status_code] += 1
            if response.status_code >= 300 and response.status_code != 404:
                refusals.setdefault(case.operation.label, response.text[:300])

        call()
    lines, short = [], []
    for label, counts in sorted(tally.items()):
        accepted = sum(n for status, n in counts.items() if 200 <= status < 300)
        share = accepted / sum(counts.values())
        lines.append(f"{share:6.0%} {accepted:3}/{sum(counts.values()):<3} {label}  {dict(sorted(counts.items()))}")
        if label in refusals:
            lines.append(f"{'':16}first refusal: {refusals[label]}")
        if share < ACCEPTANCE and ("{" not in label or label in KNOWN_PATHS):
            short.append(label)
    with capsys.disabled():
        print("\npositive requests accepted (2xx), per operation:\n" + "\n".join(lines))
    assert not short, f"the server refused more than {1 - ACCEPTANCE:.0%} of what the document allows: {short}"
