"""A Python client generated from the served OpenAPI document works, unmodified, for an operator's flow (issue #29).

``openapi-python-client`` (a dev dependency) writes the client from ``/schema/openapi.json`` as a live
``create_app(settings)`` under uvicorn serves it; the test imports the generated package and drives the server
with it, on SQLite and PostgreSQL: a token with labels, devices enrolled with it and heartbeating, a label
changed, devices listed by selector, a campaign in waves paused and resumed, its counts and the audit trail;
then a request the document forbids, refused with a problem the client parses. A generated model that the
server refused, or an answer the client could not parse, fails the flow.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from core.base.settings import Settings
from tests.support.api import live_server

PACKAGE = "nexmdm_generated_client"
#: no formatter run after generating (the client is used as written; ruff is not on every PATH)
CONFIG = "post_hooks: []\n"
DEVICES = ("shop-42-a", "shop-42-b", "shop-7-a")


def _generate(url: str, folder: Path) -> None:
    config = folder / "client.yaml"
    config.write_text(CONFIG)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--url",
            url,
            "--meta",
            "none",
            "--output-path",
            str(folder / PACKAGE),
            "--config",
            str(config),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
def server(settings: Settings, engine: Any) -> Iterator[str]:
    with live_server(settings) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def generated(server: str, tmp_path: Path) -> Iterator[Any]:
    """The generated package, imported from ``tmp_path`` (and forgotten afterwards)."""
    _generate(f"{server}/schema/openapi.json", tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def _module(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


@pytest.mark.slow  # the generator and a uvicorn server: ~5 s a database
def test_an_operator_flow_through_the_generated_client(server: str, generated: Any, admin_key: str) -> None:
    models = _module(generated, "models")

    def call(name: str, group: str = "admin", **kwargs: Any) -> Any:
        module = _module(generated, f"api.{group}.{name}")
        answer = module.sync_detailed(**kwargs)
        assert 200 <= answer.status_code < 300, (name, answer.status_code, answer.content)
        assert answer.parsed is not None and not isinstance(answer.parsed, models.Problem), (name, answer.content)
        return answer.parsed

    admin = generated.AuthenticatedClient(base_url=server, token=admin_key, raise_on_unexpected_status=True)

    token = call(
        "v1_tokens_create_token",
        client=admin,
        body=models.TokenIn(uses=10, labels=models.TokenInLabels.from_dict({"shop": "42", "tier": "pilot"})),
    )
    assert token.secret and token.labels.to_dict() == {"shop": "42", "tier": "pilot"}

    enroller = generated.AuthenticatedClient(base_url=server, token=token.secret)
    for device_id in DEVICES:
        enrolled = call("v1_enroll_enroll", "device", client=enroller, body=models.EnrollIn(device_id=device_id))
        device = generated.AuthenticatedClient(base_url=server, token=enrolled.device_token)
        beat = call(
            "v1_heartbeat_heartbeat",
            "device",
            client=device,
            body=models.HeartbeatIn(battery_pct=80, plugged=True, status="ok"),
        )
        assert beat.created is True

    moved = call(
        "v1_devices_device_id_labels_patch_labels",
        device_id="shop-7-a",
        client=admin,
        body=models.LabelsPatchIn(set_=models.LabelsPatchInSet.from_dict({"shop": "7"}), remove=["tier"]),
    )
    assert moved.labels.to_dict() == {"shop": "7"}

    page = call("v1_devices_list_devices", client=admin, selector="shop=42,tier in (pilot)")
    assert sorted(d.device_id for d in page.items) == ["shop-42-a", "shop-42-b"]
    assert {d.labels.to_dict()["shop"] for d in page.items} == {"42"}

    created = call(
        "v1_campaigns_create_campaign",
        client=admin,
        idempotency_key="rollout-42",
        body=models.CampaignBySelector(
            action=models.CampaignBySelectorAction.SYNC,
            selector="shop=42",
            waves=models.WavesBySize(size=1, interval_seconds=3600, max_failure_pct=50.0),
            note="pilot shops first",
        ),
    )
    assert created.targeted == 2 and created.waves.count == 2 and created.status == "running"

    paused = call("v1_campaigns_campaign_id_pause_pause_campaign", campaign_id=created.id, client=admin)
    assert paused.status == "paused"
    resumed = call(
        "v1_campaigns_campaign_id_resume_resume_campaign",
        campaign_id=created.id,
        client=admin,
        body=models.ResumeIn(min_success_pct=0.0),
    )
    assert resumed.status == "running"
    call("v1_campaigns_campaign_id_pause_pause_campaign", campaign_id=created.id, client=admin)
    resumed = call("v1_campaigns_campaign_id_resume_resume_campaign", campaign_id=created.id, client=admin, body=None)
    assert resumed.status == "running"  # no options: the document's `null` body

    counts = call("v1_campaigns_campaign_id_get_campaign", campaign_id=created.id, client=admin).counts
    assert counts.targeted == 2
    assert counts.pending + counts.queued == 2 and counts.pending <= 1  # the worker releases one wave an hour

    audit = call("v1_audit_list_audit", client=admin, limit=100)
    actions = {event.action for event in audit.items}
    assert {"token.create", "campaign.create", "campaign.pause", "campaign.resume"} <= actions, actions

    # a request the document forbids (a label key with a space): a precise 422 the client parses as a Problem
    refused = _module(generated, "api.admin.v1_devices_labels_bulk_labels").sync_detailed(
        client=admin, body=models.BulkLabelsIn(selector="all", set_=models.BulkLabelsInSet.from_dict({"Bad Key": "x"}))
    )
    assert refused.status_code == 422
    assert isinstance(refused.parsed, models.Problem) and refused.parsed.errors[0].field == "labels"
    document = httpx.get(f"{server}/schema/openapi.json").json()
    key_rule = document["components"]["schemas"]["BulkLabelsIn"]["properties"]["set"]["propertyNames"]["pattern"]
    assert re.search(key_rule, "shop") and not re.search(key_rule, "Bad Key")
