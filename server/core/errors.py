"""The one error table: every code a client can see, with its HTTP status, retryability and who is at
fault. Every front end reports errors through it; the lower layers raise typed exceptions that
``classify`` maps onto it (they never name wire codes themselves).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from batching import BatcherClosedError, QueueFullError, QueueTimeoutError
from engine import EngineError, InvalidAudioError, InvalidParameterError, InvalidTextError, TextTooLongError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorKind:
    code: str
    status: int
    """HTTP status when the error is answered before any audio was sent."""
    retryable: bool
    """The same request may succeed later (a ``retry_after_ms`` hint is given where known)."""
    fault: str
    """``client`` (the request was wrong), ``capacity`` (refused for load or shutdown) or ``server``."""


_KINDS = (
    ErrorKind("bad_request", 400, False, "client"),
    ErrorKind("unknown_voice", 400, False, "client"),
    ErrorKind("text_too_long", 413, False, "client"),
    ErrorKind("unauthorized", 401, False, "client"),
    ErrorKind("too_many_streams", 429, True, "capacity"),
    ErrorKind("too_many_sockets", 429, True, "capacity"),
    ErrorKind("queue_full", 429, True, "capacity"),
    ErrorKind("shutting_down", 503, True, "capacity"),
    ErrorKind("timeout", 503, True, "server"),
    ErrorKind("internal", 500, False, "server"),
)
ERRORS: dict[str, ErrorKind] = {kind.code: kind for kind in _KINDS}
"""The closed set of error codes (docs/protocol.md explains each)."""

OUTCOME_FAULT = {"ok": "none", "cancelled": "client", **{k.code: k.fault for k in _KINDS}}
"""Request outcomes (the ``outcome`` label) and who is at fault, for metrics and alerts."""


class ServiceError(Exception):
    """An error to report to one client: a code from the table, a message, and where it belongs."""

    def __init__(self, code: str, message: str, request_id: str | None = None, *,
                 retry_after_ms: int | None = None, param: str | None = None, detail: str | None = None) -> None:
        if code not in ERRORS:  # not an assert: it must hold under python -O too
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.request_id = request_id
        self.retry_after_ms = retry_after_ms
        self.param = param
        """The request field at fault, where one is (OpenAI's ``param``)."""
        self.detail = detail
        """A finer code for front ends whose clients expect one (OpenAI's ``invalid_speed``...)."""

    @property
    def kind(self) -> ErrorKind:
        return ERRORS[self.code]

    @property
    def message(self) -> str:
        return str(self)

    def for_request(self, request_id: str | None) -> ServiceError:
        if self.request_id == request_id:
            return self
        return ServiceError(self.code, str(self), request_id, retry_after_ms=self.retry_after_ms,
                            param=self.param, detail=self.detail)


def classify(exc: BaseException, request_id: str | None = None) -> ServiceError:
    """Map any exception onto the table. Unknown ones are ``internal`` and logged with their traceback."""
    if isinstance(exc, ServiceError):
        return exc.for_request(request_id)
    if isinstance(exc, QueueFullError):
        return ServiceError("queue_full", str(exc), request_id, retry_after_ms=exc.retry_after_ms)
    if isinstance(exc, QueueTimeoutError):
        return ServiceError("timeout", str(exc), request_id)
    if isinstance(exc, BatcherClosedError):
        return ServiceError("shutting_down", str(exc), request_id)
    if isinstance(exc, TextTooLongError):
        return ServiceError("text_too_long", str(exc), request_id)
    if isinstance(exc, InvalidAudioError | InvalidTextError | InvalidParameterError):
        return ServiceError("bad_request", str(exc), request_id)
    if isinstance(exc, EngineError) and exc.code in ERRORS and exc.code != "internal":
        return ServiceError(exc.code, str(exc), request_id)
    log.error("internal error serving %s", request_id, exc_info=exc)
    return ServiceError("internal", "internal server error", request_id)
