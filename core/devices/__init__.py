"""Devices as records: lookup and authentication, the fleet listing, labels, selectors, presence.

``records`` (get, authenticate, recent heartbeats), ``listing`` (the fleet view on Core tables only: the
CLI's ``devices list`` never imports the ORM), ``labels``, ``selectors`` (the grammar and its SQL) and
``presence`` (online/offline transitions), ``scopes`` (a principal's selector scope, ANDed into device
queries). Enrolling and revoking a device is ``core.enrollment``.
"""
