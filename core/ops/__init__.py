"""Operations over every domain: retention, maintenance, leases and locks, fleet statistics.

``retention`` (the registry of cleanups behind ``nexmdm cleanup``), ``maintenance`` (the leader's sweeps),
``leases`` and ``locks`` (one holder at a time), ``fleet_stats`` (what ``nexmdm top`` and the gauges show).
"""
