"""Approvals: a destructive command or campaign waits for a second admin, then a cooling-off delay.

Public functions:

* requests — ``request_command``, ``request_campaign``, ``get_approval``, ``list_approvals``;
* decisions — ``approve``, ``deny``, ``cancel`` (each one conditional UPDATE: of racing decisions one wins),
  ``expire_due`` and ``release_due`` (the maintenance loop's), and the refusals they raise (audited).

The state machine (docs/approvals.md)::

    awaiting_approval --approve--> approved --(delay over) release--> released
          |  |  |                      |
          |  |  +--deny--> denied      +--cancel--> cancelled
          |  +--cancel--> cancelled
          +--(24 h) expire--> expired
"""

from core.approvals.decisions import (
    REFUSALS,
    ApprovalClosed,
    SelfApprovalRefused,
    approve,
    cancel,
    deny,
    expire_due,
    release_due,
)
from core.approvals.requests import get_approval, list_approvals, request_campaign, request_command

__all__ = [
    "REFUSALS",
    "ApprovalClosed",
    "SelfApprovalRefused",
    "approve",
    "cancel",
    "deny",
    "expire_due",
    "get_approval",
    "list_approvals",
    "release_due",
    "request_campaign",
    "request_command",
]
