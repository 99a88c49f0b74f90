"""The webhook event types: the one list that core, the API's schema and the CLI's help text share."""

from __future__ import annotations

EVENT_TYPES = (
    "device.enrolled",
    "device.offline",
    "device.online",
    "device.revoked",
    "device.noncompliant",
    "device.compliant",
    "command.failed",
    "campaign.completed",
    "campaign.halted",
    "approval.requested",
    "approval.approved",
    "approval.denied",
)
#: sent only by ``webhooks test``, whatever the endpoint subscribed to
TEST_EVENT = "webhook.test"
