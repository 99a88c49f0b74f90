"""The bottom layer: values and rules with no SQL and no SQLAlchemy.

The clock, durations, secrets (``security``), identifier and value checks (``validation``), command
statuses, version keys, campaign ids, the label syntax, webhook event types, domain errors and settings.
Every other package of ``core`` may import these; they import nothing of ``core`` above them.
"""
