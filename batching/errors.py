"""Typed batcher errors; ``code`` values are the WebSocket protocol's error codes."""

from __future__ import annotations


class BatcherError(Exception):
    code = "internal"


class QueueFullError(BatcherError):
    """The queue is at its item or frame limit; the caller should retry after ``retry_after_ms``."""

    code = "queue_full"

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class QueueTimeoutError(BatcherError):
    """The item waited past its deadline and was dropped before reaching the model."""

    code = "timeout"


class BatcherClosedError(BatcherError):
    """The batcher is shutting down (or its task died) and takes no more work."""

    code = "shutting_down"
