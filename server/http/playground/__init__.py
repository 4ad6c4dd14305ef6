"""The browser playground: ``GET /`` (one static page), its assets under ``/playground/``, and
``GET /v1/status`` for its live panel. The page and assets are public; ``/v1/status`` sits behind the
API key like every ``/v1/*`` route."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from server.http.playground.status import RECENT_KEY, Recent, status

STATIC = Path(__file__).parent / "static"
ASSET_PREFIX = "/playground"


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def add_playground(app: web.Application) -> None:
    app[RECENT_KEY] = Recent()
    app.router.add_get("/", page)
    app.router.add_get("/v1/status", status)
    app.router.add_static(ASSET_PREFIX, STATIC, append_version=False)
