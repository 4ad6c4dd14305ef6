"""asyncio micro-batcher, generic over the small ``BatchModel`` protocol (no torch here)."""

from batching.base import Entry
from batching.batcher import MicroBatcher
from batching.config import BatcherConfig
from batching.cost import CostModel, CostSample
from batching.errors import BatcherClosedError, BatcherError, QueueFullError, QueueTimeoutError
from batching.protocol import BatchModel, BatchObserver, CostObserver, NullObserver
from batching.queue import Ticket
from batching.step_batcher import StepBatcher
from batching.step_planner import StepModel

__all__ = [
    "BatchModel",
    "BatchObserver",
    "BatcherClosedError",
    "BatcherConfig",
    "BatcherError",
    "CostModel",
    "CostObserver",
    "CostSample",
    "Entry",
    "MicroBatcher",
    "NullObserver",
    "QueueFullError",
    "QueueTimeoutError",
    "StepBatcher",
    "StepModel",
    "Ticket",
]
