"""Campaigns: one command to many devices, in waves, with gates and auto-halt.

Public functions:

* campaigns — ``create_campaign``, ``preview``, ``get_campaign``, ``list_campaigns``, ``campaign_devices``,
  ``require_in_scope`` (what a scoped principal may reach);
* progress — ``advance``, ``run_due`` (release, halt, complete), ``pause``, ``resume``, ``cancel``.

Labels and selectors, which campaigns target, are :mod:`core.devices.labels` and :mod:`core.devices.selectors`.
"""

from core.campaigns.records import (
    campaign_devices,
    create_campaign,
    get_campaign,
    list_campaigns,
    preview,
    require_in_scope,
)
from core.campaigns.release import advance, cancel, pause, resume, run_due

__all__ = [
    "advance",
    "campaign_devices",
    "cancel",
    "create_campaign",
    "get_campaign",
    "list_campaigns",
    "pause",
    "preview",
    "require_in_scope",
    "resume",
    "run_due",
]
