"""FCM delivery: the push queue (``queue``), the asyncio sender (``sender``) and the worker (``worker``)."""

from core.commands.push.queue import Claim, claim_due, queue_stats, sweep_expired
from core.commands.push.worker import DeliveryWorker, client_from_settings

__all__ = ["Claim", "DeliveryWorker", "claim_due", "client_from_settings", "queue_stats", "sweep_expired"]
