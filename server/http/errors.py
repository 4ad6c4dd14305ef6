"""JSON error responses for the HTTP routes, in OpenAI's shape so its SDKs can read them:
``{"error": {"message", "type", "code", "param"}}``."""

from __future__ import annotations

import math

from aiohttp import web

from server.core.errors import ServiceError

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
          409: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          500: "server_error", 503: "server_error", 504: "server_error", 507: "server_error"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "code": code,
                      "param": param}}
    return web.json_response(body, status=status, headers=headers)


def service_error_response(error: ServiceError) -> web.Response:
    """A ``ServiceError`` as an HTTP answer: status from the error table, OpenAI's finer code where the
    front end gave one, and ``Retry-After`` (whole seconds) on every retryable refusal."""
    kind = error.kind
    headers = None
    if kind.retryable:
        headers = {"Retry-After": str(max(1, math.ceil((error.retry_after_ms or 1000) / 1000)))}
    return error_response(kind.status, error.detail or error.code, str(error), headers=headers, param=error.param)
