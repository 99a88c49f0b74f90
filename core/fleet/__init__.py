"""Fleet operations: labels, selectors and campaigns (one command to many devices, in waves).

Public functions:

* labels — ``attach_labels``, ``parse_label_args``, ``validate_labels``, ``label_device``, ``label_selected``,
  ``apply_labels``, ``label_counts``, ``device_labels``, ``set_initial_labels``;
* selectors — ``parse``, ``matching_ids``, ``count_matching``, ``where_clause`` (``InvalidSelector``);
* campaigns — ``create_campaign``, ``preview``, ``get_campaign``, ``list_campaigns``, ``campaign_devices``;
* progress — ``advance``, ``run_due`` (release, halt, complete), ``pause``, ``resume``, ``cancel``.
"""

from core.fleet.campaigns import campaign_devices, create_campaign, get_campaign, list_campaigns, preview
from core.fleet.labels import (
    apply_labels,
    attach_labels,
    device_labels,
    label_counts,
    label_device,
    label_selected,
    parse_label_args,
    set_initial_labels,
    validate_labels,
)
from core.fleet.release import advance, cancel, pause, resume, run_due
from core.fleet.selectors import InvalidSelector, count_matching, matching_ids, parse, where_clause

__all__ = [
    "InvalidSelector",
    "advance",
    "apply_labels",
    "attach_labels",
    "campaign_devices",
    "cancel",
    "count_matching",
    "create_campaign",
    "device_labels",
    "get_campaign",
    "label_counts",
    "label_device",
    "label_selected",
    "list_campaigns",
    "matching_ids",
    "parse",
    "parse_label_args",
    "pause",
    "preview",
    "resume",
    "run_due",
    "set_initial_labels",
    "validate_labels",
    "where_clause",
]
