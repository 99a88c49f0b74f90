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
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.apk import builds as apk
from core.base.settings import Settings
from core.commands import dispatches
from core.enrollment import tokens as credentials
from core.enrollment.enroll import enroll_device
from nexmdm_api import create_app
from tests.support.fakes.apk import apk_bytes

SCHEMA_PATH = "/schema/openapi.json"
#: generated cases per operation in the fuzzing phase, and scenarios in the stateful phase (per backend)
MAX_EXAMPLES = 25
STATEFUL_EXAMPLES = 15
DEVICE_ID = "dev_fuzz"


def _document() -> dict[str, Any]:
    return create_app(Settings(database_url="sqlite://")).openapi_schema.to_schema()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(
    copy.deepcopy(DOCUMENT),
    config=schemathesis.Config.from_dict({"generation": {"mode": "all"}, "checks": {"enabled": True}}),
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
    """By security scheme: an enrollment token, a device (with a pending command), an admin key; and one APK."""
    with session_factory.begin() as db:
        enrollment, _ = credentials.create_enrollment_token(db, uses=100_000)
        own, _ = credentials.create_enrollment_token(db, uses=1)
        admin, _ = admin_keys.create_admin_key(db, name="fuzz")
        device = enroll_device(db, enrollment_secret=own, device_id=DEVICE_ID)
        dispatches.create_command(db, fuzz_settings, request_id="cmd_fuzz", device_id=DEVICE_ID, action="ping")
        apk.add_build(db, fuzz_settings, source=io.BytesIO(apk_bytes()), version_code=1, version_name="1.0")
    return {"enrollmentToken": enrollment, "deviceToken": device["device_token"], "adminKey": admin}


@pytest.fixture
def app(fuzz_settings: Settings, secrets: dict[str, str]) -> Litestar:
    return create_app(fuzz_settings)


def credentials_for(case: Any, secrets: dict[str, str]) -> dict[str, str]:
    """The ``Authorization`` header for the first security requirement the operation declares.

    None when Schemathesis generated one itself (a deliberately broken credential, for instance), and none
    when it made the headers invalid on purpose: a negative case may be one without its required
    ``Authorization``, which a credential added here would make valid again (and its 2xx a finding).
    """
    if any(name.lower() == "authorization" for name in case.headers or {}):
        return {}
    header = case.meta.components.get(ParameterLocation.HEADER) if case.meta is not None else None
    if header is not None and header.mode.is_negative:
        return {}
    for requirement in case.operation.definition.raw.get("security") or []:
        for name in requirement:
            return {"Authorization": f"Bearer {secrets[name]}"}
    return {}


#: what JSON Schema cannot say, by operation: the body fields whose 422 a schema-valid request may still get
#: (an APK must be a ZIP archive; a command payload is at most 4096 bytes serialized, without control
#: characters in its strings, and must match the schema of the action it goes with, which the document gives
#: as one of all the actions' schemas; an ack's result likewise, and its error_code belongs to a failure).
#: ``positive_data_acceptance`` is replaced there by a narrower check.
BEYOND_JSON_SCHEMA = {
    "POST /v1/apk/builds": ("file",),
    "POST /v1/devices/{device_id}/commands": ("payload",),
    "POST /v1/campaigns": ("payload",),
    "POST /v1/commands/{request_id}/ack": ("result", "error_code"),
}


def validate(case: Any, response: Any, **kwargs: Any) -> None:
    fields = BEYOND_JSON_SCHEMA.get(case.operation.label)
    if fields is None:
        case.validate_response(response, **kwargs)
        return
    case.validate_response(response, excluded_checks=[positive_data_acceptance], **kwargs)
    if response.status_code == 422 and case.meta is not None and case.meta.generation.mode.is_positive:
        problem = response.json()
        # the field, or a JSON path inside it (``payload.seconds``)
        assert [e["field"].split(".")[0] for e in problem["errors"]] in ([f] for f in fields), problem


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
