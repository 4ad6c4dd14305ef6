"""Middlewares every route goes through: JSON errors everywhere, optional CORS, a deadline on request
bodies; and a log filter that turns HTTP parser refusals (garbage from clients) into one warning line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
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
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}
            code = _CODES.get(exc.status, "internal" if exc.status >= 500 else "bad_request")
            log.info("request refused", extra={"route": request.path, "code": code, "status": exc.status,
                                               "request_id": request.headers.get("X-Request-Id"),
                                               "reason": exc.reason})
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


CORS_HEADERS = "Authorization, Content-Type, X-Request-Id"
CORS_EXPOSE = "X-Seed, X-Ignored-Params, Retry-After"


def cors(origins: str) -> tuple[web.middleware, Callable[[web.Request, web.StreamResponse], Awaitable[None]]]:  # type: ignore[valid-type]
    """``--cors-origins``: a middleware answering preflights (before auth: a preflight carries no key) and a
    response-prepare hook adding the CORS headers to every answer, streamed and error ones included (a
    middleware alone would be too late for a response the handler already started)."""
    allowed = {o.strip() for o in origins.split(",") if o.strip()}

    def allow(request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        return "*" if "*" in allowed else origin if origin in allowed else None

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            origin = allow(request)
            if origin is None:
                return error_response(403, "cors_origin_not_allowed", "this origin may not call the API")
            return web.Response(status=204, headers={
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", CORS_HEADERS),
                "Access-Control-Max-Age": "600"})
        return await handler(request)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        origin = allow(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
            if origin != "*":
                response.headers["Vary"] = "Origin"

    return preflight, add_headers


class ParserNoise(logging.Filter):
    """aiohttp logs a request its parser refuses (a NUL byte in a header, a malformed request line) with a
    full ERROR traceback, though the client is at fault and was answered 400. This filter, on the
    ``aiohttp.server`` logger, turns those records into one WARNING line; real server faults pass as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            record.msg, record.args = "%s; refused with %d: %s", (record.getMessage(), exc.code, exc.message)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_parser_errors() -> None:
    """Install ``ParserNoise`` once (create_app may run many times in one process: tests)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserNoise) for f in logger.filters):
        logger.addFilter(ParserNoise())
