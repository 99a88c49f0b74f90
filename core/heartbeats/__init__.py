"""Heartbeats, the hottest path: validation, storage, partitions and trends.

``validate`` (the fields a device may send), ``bucketing`` (the seed's ``record_heartbeat_with_bucketing``),
``store`` (the API's batched and per-request paths, the last-seen summary), ``partitions`` (daily
partitions on PostgreSQL) and ``trends``. Imports nothing above ``core.devices``.
"""
