"""Campaigns: one command to many devices, in waves, with gates and auto-halt.

Public functions:

* campaigns — ``create_campaign``, ``preview``, ``get_campaign``, ``list_campaigns``, ``campaign_devices``,
  ``require_in_scope`` (what a scoped principal may reach);
* progress — ``advance``, ``run_due`` (release, halt, complete), ``pause``, ``resume``, ``cancel``;
* outcomes — ``check_device`` (a device's acked targets succeed once it matches ``success_when``),
  ``failure_groups`` and ``failed_devices`` (why targets failed, by reason, model and OS version).

Labels and selectors, which campaigns target, are :mod:`core.devices.labels` and :mod:`core.devices.selectors`.
"""

from core.campaigns.drill import campaign_devices
from core.campaigns.failures import failed_devices, failure_groups
from core.campaigns.outcomes import check_device
from core.campaigns.records import (
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
    "check_device",
    "create_campaign",
    "failed_devices",
    "failure_groups",
    "get_campaign",
    "list_campaigns",
    "pause",
    "preview",
    "require_in_scope",
    "resume",
    "run_due",
]
