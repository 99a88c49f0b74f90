"""Profiles (desired state): versioned documents layered by selector and priority, each device's
effective profile, its delivery and the compliance the server verifies.

- ``document``: parse, validate, normalize, hash a profile document; its keys and diffs.
- ``store``: plan, apply, rollback, delete; list, show, history.
- ``effective``: the merge, and the set-based upkeep of ``devices.effective_hash``.
- ``compliance``: status reports, the server's verification, compliance per device and for the fleet.
"""
