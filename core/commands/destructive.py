"""Which actions are destructive: they reach a device only through an approval (``core.approvals``).

Until the typed action catalogue (``core.commands.catalogue.is_destructive``) is merged, the set is
declared here; the catalogue replaces it, and this module then re-exports its ``is_destructive``.
"""

from __future__ import annotations

from core.base.errors import Conflict

#: replaced by the catalogue's ``destructive`` flag (issue #25, "Typed actions")
DESTRUCTIVE_ACTIONS = frozenset({"wipe"})


class ApprovalRequired(Conflict):
    """A destructive action asked for without an approval (``core.approvals`` is the only way in)."""

    code = "approval_required"


def is_destructive(action: str) -> bool:
    return action in DESTRUCTIVE_ACTIONS


def refuse_unapproved(action: str) -> None:
    """Raise :class:`ApprovalRequired` for a destructive ``action``: the guard of every path that sends."""
    if is_destructive(action):
        raise ApprovalRequired(
            f"{action!r} is destructive: it needs a second admin's approval (see docs/approvals.md)", field="action"
        )
