"""Commands: dispatch records, their lifecycle and push delivery.

``catalogue`` (every action with its payload and result schemas), ``results`` (an ack's typed answer),
``records`` (the seed's ``record_fcm_dispatch``), ``lifecycle`` (the one place that finishes a command),
``dispatches`` (create, cancel, list, ack, stats) and ``push/`` (the FCM queue, sender, worker and rate cap).
"""
