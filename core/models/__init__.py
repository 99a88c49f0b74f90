"""SQLAlchemy models; importing this package registers every table on ``Base.metadata``."""

from core.models.apk import DOWNLOAD_SOURCES, ApkBuild, ApkDownloadEvent
from core.models.approval import APPROVAL_FINAL, APPROVAL_KINDS, APPROVAL_STATES, Approval
from core.models.base import NAMING_CONVENTION, Base
from core.models.blob import ApkBlob, ApkChunk
from core.models.console import CONSOLE_KINDS, ConsoleSession
from core.models.credentials import ROLES, AdminKey, EnrollmentToken
from core.models.device import Device
from core.models.dispatch import COMMAND_STATUSES, FCM_STATUSES, FINISHED_STATUSES, FcmDispatch
from core.models.events import (
    AUDIT_OUTCOMES,
    OUTBOX_STATUSES,
    AuditEvent,
    DevicePresence,
    PresenceSweep,
    WebhookEndpoint,
    WebhookOutbox,
)
from core.models.fleet import CAMPAIGN_FINAL, CAMPAIGN_STATUSES, Campaign, CampaignTarget, DeviceLabel
from core.models.heartbeat import NETWORK_TYPES, DeviceHeartbeat
from core.models.inventory import APP_CHANGES, DeviceApp, DeviceAppChange, DeviceInventory
from core.models.lease import Lease
from core.models.location import LOCATION_SOURCES, DeviceLocation, DeviceLostMode
from core.models.profile import (
    COMPLIANCE_STATES,
    HELD_OUT,
    DeviceCompliance,
    DeviceProfile,
    Profile,
    ProfileEffective,
    ProfileVersion,
)

__all__ = [
    "COMPLIANCE_STATES",
    "HELD_OUT",
    "DeviceCompliance",
    "DeviceProfile",
    "Profile",
    "ProfileEffective",
    "ProfileVersion",
    "APP_CHANGES",
    "DeviceApp",
    "DeviceAppChange",
    "DeviceInventory",
    "APPROVAL_FINAL",
    "APPROVAL_KINDS",
    "APPROVAL_STATES",
    "Approval",
    "CAMPAIGN_FINAL",
    "CONSOLE_KINDS",
    "ConsoleSession",
    "CAMPAIGN_STATUSES",
    "Campaign",
    "CampaignTarget",
    "DeviceLabel",
    "AUDIT_OUTCOMES",
    "OUTBOX_STATUSES",
    "ROLES",
    "AuditEvent",
    "DevicePresence",
    "PresenceSweep",
    "WebhookEndpoint",
    "WebhookOutbox",
    "COMMAND_STATUSES",
    "DOWNLOAD_SOURCES",
    "FCM_STATUSES",
    "FINISHED_STATUSES",
    "NAMING_CONVENTION",
    "NETWORK_TYPES",
    "AdminKey",
    "ApkBlob",
    "ApkBuild",
    "ApkChunk",
    "ApkDownloadEvent",
    "Base",
    "Device",
    "DeviceHeartbeat",
    "EnrollmentToken",
    "FcmDispatch",
    "Lease",
    "LOCATION_SOURCES",
    "DeviceLocation",
    "DeviceLostMode",
]
