"""Destructive actions reach a device only through an approval (``core.approvals``): the guard.

Which actions are destructive is the catalogue's ``destructive`` flag (``core.commands.catalogue``:
``wipe``, or an operator's action its schema file marks so).
"""

from __future__ import annotations

from core.base.errors import Conflict
from core.base.settings import Settings
from core.commands.catalogue import is_destructive

__all__ = ["ApprovalRequired", "is_destructive", "refuse_unapproved"]


class ApprovalRequired(Conflict):
    """A destructive action asked for without an approval (``core.approvals`` is the only way in)."""

    code = "approval_required"


def refuse_unapproved(action: str, settings: Settings | None = None) -> None:
    """Raise :class:`ApprovalRequired` for a destructive ``action``: the guard of every path that sends."""
    if is_destructive(action, settings):
        raise ApprovalRequired(
            f"{action!r} is destructive: it needs a second admin's approval (see docs/approvals.md)", field="action"
        )
