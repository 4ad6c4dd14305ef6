"""The one error table: every code a client can see, on every route and message, with its HTTP status,
retryability and who is at fault. Every front end reports errors through ``ServiceError`` (the one
exception type carrying a code); the lower layers raise typed exceptions that ``classify`` maps onto the
table (they never name wire codes themselves). docs/protocol.md and docs/http-api.md list every code
(tests/test_error_table.py holds them to it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

from batching import BatcherClosedError, QueueFullError, QueueTimeoutError
from engine import (
    InvalidAudioError,
    InvalidParameterError,
    InvalidTextError,
    SynthesisParams,
    TextTooLongError,
    TranscriptTooLongError,
)

log = logging.getLogger(__name__)

STREAM, VOICES, HTTP = "stream", "voices", "http"
"""Where a code can come from: ``stream`` any synthesis request on every front end (the WebSocket's
``error`` messages, HTTP speech, RunPod jobs; the ``outcome`` of a request), ``voices`` the voice routes,
``http`` the HTTP server's own refusals on any route."""


@dataclass(frozen=True)
class ErrorKind:
    code: str
    status: int
    """HTTP status when the error is answered before any audio was sent."""
    retryable: bool
    """The same request may succeed later (a ``retry_after_ms`` hint is given where known)."""
    fault: str
    """``client`` (the request was wrong), ``capacity`` (refused for load or shutdown) or ``server``."""
    scope: str
    """``STREAM``, ``VOICES`` or ``HTTP``: where the code can come from."""
    other_statuses: tuple[int, ...] = ()
    """Statuses some answers give instead of ``status`` (each use is documented in docs/http-api.md)."""


_KINDS = (
    ErrorKind("bad_request", 400, False, "client", STREAM),
    ErrorKind("unknown_voice", 400, False, "client", STREAM, (404,)),  # 404 on /v1/voices/{id}
    ErrorKind("text_too_long", 413, False, "client", STREAM),
    ErrorKind("unauthorized", 401, False, "client", STREAM),
    ErrorKind("too_many_streams", 429, True, "capacity", STREAM),
    ErrorKind("too_many_sockets", 429, True, "capacity", STREAM),
    ErrorKind("queue_full", 429, True, "capacity", STREAM),
    ErrorKind("shutting_down", 503, True, "capacity", STREAM),
    ErrorKind("timeout", 503, True, "server", STREAM),
    ErrorKind("internal", 500, False, "server", STREAM),
    ErrorKind("bad_audio", 400, False, "client", VOICES),
    ErrorKind("transcript_too_long", 400, False, "client", VOICES),
    ErrorKind("conflict", 409, False, "client", VOICES),
    ErrorKind("too_large", 413, False, "client", VOICES),
    ErrorKind("quota_exceeded", 507, False, "client", VOICES),
    ErrorKind("storage_error", 500, False, "server", VOICES, (507,)),  # 507: the disk is full
    ErrorKind("not_found", 404, False, "client", HTTP),
    ErrorKind("model_not_found", 404, False, "client", HTTP),
    ErrorKind("method_not_allowed", 405, False, "client", HTTP),
    ErrorKind("request_timeout", 408, False, "client", HTTP),
    ErrorKind("request_too_large", 413, False, "client", HTTP),
    ErrorKind("unsupported_media_type", 415, False, "client", HTTP),
    ErrorKind("cors_origin_not_allowed", 403, False, "client", HTTP),
)
ERRORS: dict[str, ErrorKind] = {kind.code: kind for kind in _KINDS}
"""The closed set of error codes (docs/protocol.md and docs/http-api.md explain each)."""

STREAM_CODES = frozenset(kind.code for kind in _KINDS if kind.scope == STREAM)
"""What a synthesis request can end with on any front end (the WebSocket's ``error`` codes)."""

DETAILS: dict[str, str] = {
    "invalid_json": "bad_request", "invalid_request": "bad_request", "unknown_parameter": "bad_request",
    "invalid_type": "bad_request", "model_not_found": "bad_request", "invalid_input": "bad_request",
    "invalid_response_format": "bad_request", "invalid_stream_format": "bad_request",
    **{f"invalid_{f.name}": "bad_request" for f in fields(SynthesisParams)},
    "voice_not_found": "unknown_voice", "input_too_long": "text_too_long",
}
"""OpenAI's finer codes (the HTTP speech route answers them in place of the code they refine, with its
status); every other front end, and the metrics, see the refined code. ``invalid_<field>``: a synthesis
parameter (``SynthesisParams``) out of its range."""

OUTCOME_FAULT = {"ok": "none", "cancelled": "client", **{k.code: k.fault for k in _KINDS}}
"""Request outcomes (the ``outcome`` label) and who is at fault, for metrics and alerts."""


class ServiceError(Exception):
    """An error to report to one client: a code from the table, a message, and where it belongs."""

    def __init__(self, code: str, message: str, request_id: str | None = None, *,
                 retry_after_ms: int | None = None, param: str | None = None, detail: str | None = None,
                 status: int | None = None) -> None:
        # Not asserts: the table must hold under python -O too.
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code!r}")
        if detail is not None and DETAILS.get(detail) != code:
            raise ValueError(f"{detail!r} is not a finer code of {code!r}")
        if status is not None and status != ERRORS[code].status and status not in ERRORS[code].other_statuses:
            raise ValueError(f"{code!r} is never answered with status {status}")
        super().__init__(message)
        self.code = code
        self.request_id = request_id
        self.retry_after_ms = retry_after_ms
        self.param = param
        """The request field at fault, where one is (OpenAI's ``param``)."""
        self.detail = detail
        """A finer code for front ends whose clients expect one (OpenAI's ``invalid_speed``...)."""
        self._status = status

    @property
    def kind(self) -> ErrorKind:
        return ERRORS[self.code]

    @property
    def status(self) -> int:
        """The HTTP status: the table's, or the documented other status this answer gives."""
        return self._status or self.kind.status

    @property
    def message(self) -> str:
        return str(self)

    def for_request(self, request_id: str | None) -> ServiceError:
        if self.request_id == request_id:
            return self
        return ServiceError(self.code, str(self), request_id, retry_after_ms=self.retry_after_ms,
                            param=self.param, detail=self.detail, status=self._status)


def classify(exc: BaseException, request_id: str | None = None) -> ServiceError:
    """Map any exception onto the table. Unknown ones are ``internal`` and logged with their traceback."""
    if isinstance(exc, ServiceError):
        return exc.for_request(request_id)
    code = _code_of(exc)
    if code is None:
        log.error("internal error serving %s", request_id, exc_info=exc)
        return ServiceError("internal", "internal server error", request_id)
    retry_after_ms = exc.retry_after_ms if isinstance(exc, QueueFullError) else None
    return ServiceError(code, str(exc), request_id, retry_after_ms=retry_after_ms)


def _code_of(exc: BaseException) -> str | None:
    """The table's code for a lower layer's exception type (most specific first); None: a fault."""
    for kinds, code in _LOWER:
        if isinstance(exc, kinds):
            return code
    return None


_LOWER: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (QueueFullError, "queue_full"),
    (QueueTimeoutError, "timeout"),
    (BatcherClosedError, "shutting_down"),
    (TranscriptTooLongError, "transcript_too_long"),
    (TextTooLongError, "text_too_long"),
    (InvalidAudioError, "bad_audio"),
    ((InvalidTextError, InvalidParameterError), "bad_request"),
)
"""Lower layers' exceptions and their codes. Any other ``EngineError`` (a model that failed to load) is a
server fault."""
