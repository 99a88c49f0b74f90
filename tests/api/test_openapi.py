"""The OpenAPI document's operations: each keeps its operationId, summary, tags and security.

Clients generated from the document name their methods after the operationIds; the roles of
``admin_route`` are the scopes of ``adminKey``. A change to a controller must not move either by accident.
"""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient
from openapi_spec_validator import validate

from core.base.settings import Settings
from nexmdm_api import create_app

#: (method, path) -> (operationId, summary, who may call it: ``admin:<least role>``, a credential, ``any`` or None)
OPERATIONS = {
    ("GET", "/v1/actions"): ("V1ActionsListActions", "List the action catalogue", "admin:viewer"),
    ("GET", "/v1/actions/{name}"): ("V1ActionsNameGetAction", "One action of the catalogue", "admin:viewer"),
    ("GET", "/v1/devices/{device_id}/location"): (
        "V1DevicesDeviceIdLocationLastLocation",
        "A device's last known location and lost mode",
        "admin:operator",
    ),
    ("GET", "/v1/devices/{device_id}/locations"): (
        "V1DevicesDeviceIdLocationsListLocations",
        "A device's kept locations, newest first",
        "admin:operator",
    ),
    ("POST", "/v1/location"): (
        "V1LocationReportLocation",
        "Report the calling device's location (lost mode only)",
        "deviceToken",
    ),
    ("GET", "/healthz"): ("HealthzHealthz", "Liveness: the process answers", None),
    ("GET", "/metrics"): ("MetricsGet", "Prometheus metrics", None),
    ("GET", "/readyz"): ("ReadyzReadyz", "Readiness: the database answers and is migrated far enough", None),
    ("GET", "/v1/apk/builds"): ("V1ApkBuildsListBuilds", "List builds, newest version first", "admin:viewer"),
    ("POST", "/v1/apk/builds"): ("V1ApkBuildsUploadBuild", "Upload a build (CI)", "admin:operator"),
    ("DELETE", "/v1/apk/builds/{build_id}"): ("V1ApkBuildsBuildIdRemoveBuild", "Remove a build", "admin:operator"),
    ("GET", "/v1/apk/download/latest"): ("V1ApkDownloadLatestDownloadLatest", "Download the newest build", "any"),
    ("GET", "/v1/apk/download/{build_id}"): ("V1ApkDownloadBuildIdDownloadBuild", "Download one build", "any"),
    ("GET", "/v1/apk/downloads"): ("V1ApkDownloadsListDownloads", "APK download events, newest first", "admin:viewer"),
    ("GET", "/v1/apk/latest"): ("V1ApkLatestLatestBuild", "Metadata of the newest build", "any"),
    ("GET", "/v1/approvals"): (
        "V1ApprovalsListApprovals",
        "List approvals of destructive actions, newest first",
        "admin:viewer",
    ),
    ("GET", "/v1/approvals/{approval_id}"): ("V1ApprovalsApprovalIdGetApproval", "One approval", "admin:viewer"),
    ("POST", "/v1/approvals/{approval_id}/approve"): (
        "V1ApprovalsApprovalIdApproveApproveRequest",
        "Approve a destructive action (another admin than the one who asked)",
        "admin:admin",
    ),
    ("POST", "/v1/approvals/{approval_id}/deny"): (
        "V1ApprovalsApprovalIdDenyDenyRequest",
        "Deny a destructive action",
        "admin:admin",
    ),
    ("POST", "/v1/approvals/{approval_id}/cancel"): (
        "V1ApprovalsApprovalIdCancelCancelRequest",
        "Cancel a destructive action before its release",
        "admin:operator",
    ),
    ("GET", "/v1/audit"): ("V1AuditListAudit", "The audit trail", "admin:admin"),
    ("GET", "/v1/campaigns"): ("V1CampaignsListCampaigns", "List campaigns, newest first", "admin:viewer"),
    ("POST", "/v1/campaigns"): ("V1CampaignsCreateCampaign", "Send one command to many devices", "admin:operator"),
    ("GET", "/v1/campaigns/{campaign_id}"): (
        "V1CampaignsCampaignIdGetCampaign",
        "One campaign with its counts",
        "admin:viewer",
    ),
    ("POST", "/v1/campaigns/{campaign_id}/cancel"): (
        "V1CampaignsCampaignIdCancelCancelCampaign",
        "Cancel a campaign and its queued and pending commands",
        "admin:operator",
    ),
    ("GET", "/v1/campaigns/{campaign_id}/devices"): (
        "V1CampaignsCampaignIdDevicesCampaignDevices",
        "A campaign's targets (in one state), by device id",
        "admin:viewer",
    ),
    ("GET", "/v1/campaigns/{campaign_id}/failures"): (
        "V1CampaignsCampaignIdFailuresCampaignFailures",
        "Why a campaign's targets failed: groups by reason, model and OS version",
        "admin:viewer",
    ),
    ("GET", "/v1/campaigns/{campaign_id}/failures/devices"): (
        "V1CampaignsCampaignIdFailuresDevicesCampaignFailedDevices",
        "A campaign's failed targets (of one group), by device id, with the ack's detail",
        "admin:viewer",
    ),
    ("POST", "/v1/campaigns/{campaign_id}/pause"): (
        "V1CampaignsCampaignIdPausePauseCampaign",
        "Pause a campaign (no further waves)",
        "admin:operator",
    ),
    ("POST", "/v1/campaigns/{campaign_id}/resume"): (
        "V1CampaignsCampaignIdResumeResumeCampaign",
        "Resume a paused or halted campaign",
        "admin:operator",
    ),
    ("GET", "/v1/commands"): ("V1CommandsListCommands", "List commands, newest first", "admin:viewer"),
    ("GET", "/v1/commands/pending"): (
        "V1CommandsPendingPendingCommands",
        "The calling device's pending commands",
        "deviceToken",
    ),
    ("GET", "/v1/commands/{request_id}"): (
        "V1CommandsRequestIdGetCommand",
        "One dispatch with its status history",
        "admin:viewer",
    ),
    ("POST", "/v1/commands/{request_id}/ack"): (
        "V1CommandsRequestIdAckAckCommand",
        "Acknowledge one of the calling device's commands",
        "deviceToken",
    ),
    ("POST", "/v1/commands/{request_id}/cancel"): (
        "V1CommandsRequestIdCancelCancelCommand",
        "Cancel a pending command",
        "admin:operator",
    ),
    ("GET", "/v1/devices"): ("V1DevicesListDevices", "List devices", "admin:viewer"),
    ("POST", "/v1/devices/labels"): (
        "V1DevicesLabelsBulkLabels",
        "Set and remove labels on every device a selector matches",
        "admin:operator",
    ),
    ("GET", "/v1/devices/{device_id}"): ("V1DevicesDeviceIdGetDevice", "One device", "admin:viewer"),
    ("POST", "/v1/devices/{device_id}/commands"): (
        "V1DevicesDeviceIdCommandsCreateCommand",
        "Dispatch a command to a device",
        "admin:operator",
    ),
    ("GET", "/v1/devices/{device_id}/heartbeats"): (
        "V1DevicesDeviceIdHeartbeatsDeviceHeartbeats",
        "A device's heartbeats, newest first",
        "admin:viewer",
    ),
    ("PATCH", "/v1/devices/{device_id}/labels"): (
        "V1DevicesDeviceIdLabelsPatchLabels",
        "Set and remove a device's labels",
        "admin:operator",
    ),
    ("POST", "/v1/devices/{device_id}/revoke"): (
        "V1DevicesDeviceIdRevokeRevokeDevice",
        "Revoke a device",
        "admin:operator",
    ),
    ("POST", "/v1/enroll"): ("V1EnrollEnroll", "Enroll a device", "enrollmentToken"),
    ("POST", "/v1/heartbeat"): ("V1HeartbeatHeartbeat", "Report a heartbeat", "deviceToken"),
    ("PUT", "/v1/inventory"): ("V1InventoryPutInventory", "Report the device's whole inventory", "deviceToken"),
    ("PATCH", "/v1/inventory"): (
        "V1InventoryPatchInventory",
        "Report a change of the device's inventory",
        "deviceToken",
    ),
    ("GET", "/v1/devices/{device_id}/app-changes"): (
        "V1DevicesDeviceIdAppChangesAppChanges",
        "A device's app changes, newest first",
        "admin:viewer",
    ),
    ("GET", "/v1/devices/{device_id}/apps"): (
        "V1DevicesDeviceIdAppsDeviceApps",
        "A device's installed apps, by package",
        "admin:viewer",
    ),
    ("GET", "/v1/devices/{device_id}/inventory"): (
        "V1DevicesDeviceIdInventoryDeviceInventory",
        "A device's inventory",
        "admin:viewer",
    ),
    ("GET", "/v1/apps"): ("V1AppsListApps", "The apps on the selected devices", "admin:viewer"),
    ("GET", "/v1/apps/{package}"): (
        "V1AppsPackageGetApp",
        "One app's versions on the selected devices",
        "admin:viewer",
    ),
    ("GET", "/v1/profiles"): ("V1ProfilesListProfiles", "Profiles, lowest priority first", "admin:viewer"),
    ("POST", "/v1/profiles"): ("V1ProfilesApplyProfile", "Apply a profile document", "admin:operator"),
    ("GET", "/v1/profiles/{name}"): (
        "V1ProfilesNameGetProfile",
        "A profile's current (or given) version",
        "admin:viewer",
    ),
    ("DELETE", "/v1/profiles/{name}"): ("V1ProfilesNameDeleteProfile", "Delete a profile", "admin:operator"),
    ("POST", "/v1/profiles/plan"): (
        "V1ProfilesPlanPlanProfile",
        "What applying a profile document would do",
        "admin:operator",
    ),
    ("GET", "/v1/profiles/{name}/history"): (
        "V1ProfilesNameHistoryProfileHistory",
        "A profile's versions, newest first",
        "admin:viewer",
    ),
    ("POST", "/v1/profiles/{name}/rollback"): (
        "V1ProfilesNameRollbackRollbackProfile",
        "Make an old version's content current again",
        "admin:operator",
    ),
    ("GET", "/v1/devices/{device_id}/compliance"): (
        "V1DevicesDeviceIdComplianceDeviceCompliance",
        "A device's compliance",
        "admin:viewer",
    ),
    ("GET", "/v1/devices/{device_id}/effective-profile"): (
        "V1DevicesDeviceIdEffectiveProfileEffectiveProfile",
        "A device's effective profile, key by key",
        "admin:viewer",
    ),
    ("GET", "/v1/compliance"): ("V1ComplianceFleetCompliance", "Devices per compliance state", "admin:viewer"),
    ("GET", "/v1/profile"): ("V1ProfileGetProfile", "The device's effective profile", "deviceToken"),
    ("POST", "/v1/profile/status"): (
        "V1ProfileStatusReportStatus",
        "Report how the device applied its effective profile",
        "deviceToken",
    ),
    ("GET", "/v1/keys"): ("V1KeysListKeys", "List admin keys", "admin:admin"),
    ("POST", "/v1/keys"): ("V1KeysCreateKey", "Create an admin key", "admin:admin"),
    ("POST", "/v1/keys/{name}/revoke"): ("V1KeysNameRevokeRevokeKey", "Revoke an admin key", "admin:admin"),
    ("GET", "/v1/labels"): ("V1LabelsLabelCounts", "Devices per label key and value", "admin:viewer"),
    ("GET", "/v1/tokens"): ("V1TokensListTokens", "List enrollment tokens", "admin:viewer"),
    ("POST", "/v1/tokens"): ("V1TokensCreateToken", "Create an enrollment token", "admin:operator"),
    ("POST", "/v1/tokens/{token_id}/revoke"): (
        "V1TokensTokenIdRevokeRevokeToken",
        "Revoke an enrollment token",
        "admin:operator",
    ),
    ("GET", "/v1/webhooks"): ("V1WebhooksListWebhooks", "List webhook receivers", "admin:admin"),
    ("POST", "/v1/webhooks"): ("V1WebhooksCreateWebhook", "Add a webhook receiver", "admin:admin"),
    ("POST", "/v1/webhooks/deliveries/{delivery_id}/redeliver"): (
        "V1WebhooksDeliveriesDeliveryIdRedeliverRedeliver",
        "Send a delivery again",
        "admin:admin",
    ),
    ("DELETE", "/v1/webhooks/{endpoint_id}"): (
        "V1WebhooksEndpointIdRemoveWebhook",
        "Remove a webhook receiver",
        "admin:admin",
    ),
    ("GET", "/v1/webhooks/{endpoint_id}/deliveries"): (
        "V1WebhooksEndpointIdDeliveriesListDeliveries",
        "A receiver's deliveries, newest first",
        "admin:admin",
    ),
    ("POST", "/v1/webhooks/{endpoint_id}/test"): (
        "V1WebhooksEndpointIdTestTestWebhook",
        "Queue a signed webhook.test event for one receiver",
        "admin:admin",
    ),
}
#: the tags by path prefix (``admin`` on every admin route besides)
TAGS = {"/v1/apk": "apk", "/v1/webhooks": "webhooks", "/healthz": "health", "/readyz": "health", "/metrics": "health"}
CREDENTIALS = {"any": [{"enrollmentToken": []}, {"deviceToken": []}, {"adminKey": []}]}


def _security(who: str | None) -> list[dict[str, list[str]]] | None:
    if who is None:
        return None
    if who.startswith("admin:"):
        return [{"adminKey": [who.removeprefix("admin:")]}]
    return CREDENTIALS.get(who, [{who: []}])


def _tags(path: str, who: str | None) -> list[str]:
    tags = {tag for prefix, tag in TAGS.items() if path.startswith(prefix)}
    if who is not None and who.startswith("admin:"):
        tags.add("admin")
    elif who is not None and not path.startswith("/v1/apk"):
        tags.add("device")
    return sorted(tags)


def _operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    }


def test_every_operation_keeps_its_id_summary_tags_and_security() -> None:
    for backend in ("sqlite:///:memory:", "postgresql://nobody@127.0.0.1:1/unused"):  # one heartbeat handler each
        spec = create_app(Settings(database_url=backend)).openapi_schema.to_schema()
        found = _operations(spec)
        assert set(found) == set(OPERATIONS), backend
        for key, (operation_id, summary, who) in OPERATIONS.items():
            operation = found[key]
            assert operation["operationId"] == operation_id, key
            assert operation["summary"] == summary, key
            assert operation.get("security") == _security(who), key
            assert operation["tags"] == _tags(key[1], who), key


def test_a_path_with_several_handlers_allows_all_their_methods(client: TestClient[Any]) -> None:
    """``OPTIONS`` lists every method of the path, not only its first handler's (``nexmdm_api.openapi.allow``)."""
    methods: dict[str, set[str]] = {}
    for method, path in OPERATIONS:
        methods.setdefault(path, set()).add(method)
    for path, expected in methods.items():
        if "{" in path:
            continue
        answer = client.options(path)
        assert answer.status_code == 204, path
        assert set(answer.headers["allow"].split(", ")) == expected | {"OPTIONS"}, path


def test_the_served_document_is_valid_openapi(client: TestClient[Any]) -> None:
    """``openapi-spec-validator`` accepts the document a client generator reads (``/schema/openapi.json``)."""
    document = client.get("/schema/openapi.json").json()
    validate(document)
    assert document["openapi"].startswith("3.1")
