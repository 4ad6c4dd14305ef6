"""Map engine and batcher exceptions onto protocol error codes."""

from __future__ import annotations

import logging

from batching import BatcherClosedError, QueueFullError, QueueTimeoutError
from engine import EngineError, InvalidAudioError
from server.ws.protocol import ProtocolError

log = logging.getLogger(__name__)


def to_protocol_error(exc: BaseException, request_id: str | None) -> ProtocolError:
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, QueueFullError):
        return ProtocolError("queue_full", str(exc), request_id, retry_after_ms=exc.retry_after_ms)
    if isinstance(exc, QueueTimeoutError):
        return ProtocolError("timeout", str(exc), request_id)
    if isinstance(exc, BatcherClosedError):
        return ProtocolError("shutting_down", str(exc), request_id)
    if isinstance(exc, InvalidAudioError):
        return ProtocolError("bad_request", str(exc), request_id)
    if isinstance(exc, EngineError) and exc.code in ("bad_request", "unknown_voice", "text_too_long"):
        return ProtocolError(exc.code, str(exc), request_id)
    log.error("internal error serving %s", request_id, exc_info=exc)
    return ProtocolError("internal", "internal server error", request_id)
