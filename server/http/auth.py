"""Optional bearer-key auth on ``/v1/*``; health, readiness and metrics stay open."""

from __future__ import annotations

import hmac
from collections.abc import Collection

from aiohttp import web
from aiohttp.typedefs import Handler

from server.http.errors import error_response

QUERY_KEY_PATHS = frozenset({"/v1/stream"})
"""Where ``?api_key=`` is accepted besides the header: the WebSocket handshake only (browsers cannot set
headers on one). A key in a URL ends up in proxy logs, so the HTTP routes take the header alone."""


def presented_key(request: web.Request, query_paths: Collection[str] = QUERY_KEY_PATHS) -> str:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.query.get("api_key", "") if request.path in query_paths else ""


def auth_middleware(api_key: str, query_paths: Collection[str] = QUERY_KEY_PATHS) -> web.middleware:  # type: ignore[valid-type]
    expected = api_key.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The ElevenLabs-compatible routes check their own header (xi-api-key) and answer in their shape.
        if api_key and request.path.startswith("/v1/") and not request.path.startswith("/v1/text-to-speech/"):
            given = presented_key(request, query_paths).encode()
            if not hmac.compare_digest(given, expected):
                return error_response(401, "unauthorized", "missing or wrong API key",
                                      headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return middleware
