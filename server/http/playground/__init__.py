"""The browser playground: ``GET /`` (one static page), its assets under ``/playground/``, and
``GET /v1/status`` for its live panel. The page and assets are public; ``/v1/status`` sits behind the
API key like every ``/v1/*`` route."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from server.http.playground.status import RECENT_KEY, Recent, status

STATIC = Path(__file__).parent / "static"
ASSET_PREFIX = "/playground"
SECURITY_HEADERS = {
    # Only this server's own script, styles and sockets; blob: for the recorded-voice preview and the
    # WAV downloads, data: for the empty favicon; never framed, no plugins, no <base> rewriting.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; media-src 'self' blob:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Sent with the page and every asset (the page holds the API key a user types in)."""


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/" or request.path.startswith(ASSET_PREFIX + "/"):
        response.headers.update(SECURITY_HEADERS)


def add_playground(app: web.Application) -> None:
    app[RECENT_KEY] = Recent()
    app.router.add_get("/", page)
    app.router.add_get("/v1/status", status)
    app.router.add_static(ASSET_PREFIX, STATIC, append_version=False)
    app.on_response_prepare.append(_security_headers)
