"""Engines, sessions and the PostgreSQL/SQLite differences.

The engine and its sessions (``engine``), the read replica, lock and statement timeouts, the Core tables
that the fleet listing reads without the ORM, column types, migrations and the schema version, the Redis
link, the one module that owns the dialect differences (``dialect``: the upsert's ``insert``, driver
errors read by SQLSTATE or message) and the batched-delete engine of retention. No domain rule lives here.
"""
