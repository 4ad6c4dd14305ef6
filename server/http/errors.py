"""JSON error responses for the HTTP routes, in OpenAI's shape so its SDKs can read them:
``{"error": {"message", "type", "code", "param"}}``. Every code comes from the one table
(server/core/errors.py)."""

from __future__ import annotations

import math

from aiohttp import web

from server.core.errors import DETAILS, ERRORS, ServiceError

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
          409: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          500: "server_error", 503: "server_error", 504: "server_error", 507: "server_error"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   param: str | None = None) -> web.Response:
    if code not in ERRORS and code not in DETAILS:  # not an assert: it must hold under python -O too
        raise ValueError(f"{code!r} is not in the error table")
    body = {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "code": code,
                      "param": param}}
    return web.json_response(body, status=status, headers=headers)


def service_error_response(error: ServiceError) -> web.Response:
    """A ``ServiceError`` as an HTTP answer: its status, OpenAI's finer code where the front end gave one,
    and ``Retry-After`` (whole seconds) on every retryable refusal."""
    headers = None
    if error.kind.retryable:
        headers = {"Retry-After": str(max(1, math.ceil((error.retry_after_ms or 1000) / 1000)))}
    return error_response(error.status, error.detail or error.code, str(error), headers=headers, param=error.param)
