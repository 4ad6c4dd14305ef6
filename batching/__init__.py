"""asyncio micro-batcher, generic over the small ``BatchModel`` protocol (no torch here)."""

from batching.batcher import BatcherConfig, MicroBatcher
from batching.errors import BatcherClosedError, BatcherError, QueueFullError, QueueTimeoutError
from batching.protocol import BatchModel, BatchObserver, NullObserver
from batching.queue import Ticket

__all__ = [
    "BatchModel",
    "BatchObserver",
    "BatcherClosedError",
    "BatcherConfig",
    "BatcherError",
    "MicroBatcher",
    "NullObserver",
    "QueueFullError",
    "QueueTimeoutError",
    "Ticket",
]
