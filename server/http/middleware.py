"""Middlewares every route goes through: JSON errors everywhere, and a deadline on request bodies."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from server.http.errors import error_response

log = logging.getLogger(__name__)

_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
          408: "request_timeout", 413: "request_too_large", 415: "unsupported_media_type"}


def json_errors() -> web.middleware:  # type: ignore[valid-type]
    """aiohttp's own refusals (unknown route, wrong method, body over the limit) and any uncaught error
    become JSON in the same shape as every other error (OpenAI's, with a machine-readable ``code``)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            log.info("request refused", extra={"route": request.path, "status": exc.status, "reason": exc.reason})
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}
            code = _CODES.get(exc.status, "internal" if exc.status >= 500 else "bad_request")
            message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
            return error_response(exc.status, code, message, headers=headers or None)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal", "internal server error")

    return middleware


def body_deadline(timeout_s: float) -> web.middleware:  # type: ignore[valid-type]
    """A request body must be complete within ``timeout_s``: a client trickling an upload byte by byte
    would otherwise hold a handler (and its buffers) forever. Only the body is timed, not the response."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def check() -> None:
            nonlocal expired
            if not request.content.at_eof():
                expired = True
                task.cancel()

        timer = asyncio.get_running_loop().call_later(timeout_s, check)
        try:
            return await handler(request)
        except asyncio.CancelledError:
            if not expired:
                raise
            task.uncancel()
            log.info("request body too slow", extra={"route": request.path, "timeout_s": timeout_s})
            return error_response(408, "request_timeout", f"the request body did not arrive within {timeout_s:g} s",
                                  headers={"Connection": "close"})
        finally:
            timer.cancel()

    return middleware
