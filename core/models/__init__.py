"""SQLAlchemy models; importing this package registers every table on ``Base.metadata``."""

from core.models.apk import DOWNLOAD_SOURCES, ApkBuild, ApkDownloadEvent
from core.models.base import NAMING_CONVENTION, Base
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
from core.models.heartbeat import NETWORK_TYPES, DeviceHeartbeat

__all__ = [
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
    "ApkBuild",
    "ApkDownloadEvent",
    "Base",
    "Device",
    "DeviceHeartbeat",
    "EnrollmentToken",
    "FcmDispatch",
]
