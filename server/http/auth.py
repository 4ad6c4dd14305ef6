"""Optional bearer-key auth on ``/v1/*``; health, readiness and metrics stay open."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler

from server.http.errors import error_response


def presented_key(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    # Browsers cannot set headers on a WebSocket handshake: they pass the key as a query parameter.
    return request.query.get("api_key", "")


def auth_middleware(api_key: str) -> web.middleware:  # type: ignore[valid-type]
    expected = api_key.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The ElevenLabs-compatible routes check their own header (xi-api-key) and answer in their shape.
        if api_key and request.path.startswith("/v1/") and not request.path.startswith("/v1/text-to-speech/"):
            given = presented_key(request).encode()
            if not hmac.compare_digest(given, expected):
                return error_response(401, "unauthorized", "missing or wrong API key",
                                      headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return middleware
