"""Accountability and integration: the audit trail, webhooks (outbox, signing, delivery), device presence.

* ``core.events.audit`` — ``Actor``, ``record`` (in the change's transaction), denied aggregates, listing;
* ``core.events.webhooks`` — endpoints, ``emit`` (outbox rows in the caller's transaction), signing;
* ``core.events.sender`` — the outbox sender (at least once, ordered per endpoint and device, backoff,
  dead letter) and the SSRF guard;
* ``core.devices.presence`` — device.online / device.offline transitions, swept in batches.
"""
