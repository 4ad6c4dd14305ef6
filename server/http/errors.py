"""JSON error responses for the HTTP routes, in OpenAI's shape so its SDKs can read them:
``{"error": {"message", "type", "code", "param"}}``."""

from __future__ import annotations

from aiohttp import web

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
          409: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          500: "server_error", 503: "server_error", 504: "server_error"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "code": code,
                      "param": param}}
    return web.json_response(body, status=status, headers=headers)
