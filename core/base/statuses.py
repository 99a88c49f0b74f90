"""The statuses of a dispatch (no SQLAlchemy here: the CLI's help text lists them).

``FINISHED_STATUSES`` is the one list of the command statuses that end a command's life: retention
cleanup deletes only those, and a command that finished before any push has ``fcm_status`` ``skipped``.
"""

from __future__ import annotations

COMMAND_STATUSES = ("pending", "acked", "failed", "expired", "cancelled")
#: ``cancelled``: by an operator, or because the device was revoked (``core.enrollment.enroll.revoke_device``)
FINISHED_STATUSES = ("acked", "failed", "expired", "cancelled")
FCM_STATUSES = ("pending", "sent", "failed", "skipped")
