"""The NexMDM HTTP API (Litestar). ``create_app(settings)`` builds it; ``nexmdm serve`` runs it."""

from nexmdm_api.app import create_app

__all__ = ["create_app"]
