"""NexMDM core: settings, database access, models, persistence helpers and domain errors.

Nothing here imports Litestar or Typer, and nothing connects to a database at import time.
"""
