"""Health, readiness and RunPod's load-balancer ping, on the main port and optionally a health port."""

from __future__ import annotations

from aiohttp import web

from server.core.state import STATE, AppState

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.ready and not state.draining and not state.leaving:
        return web.json_response({"status": "ready"})
    reason = "shutting_down" if state.draining or state.leaving else "starting"
    return web.json_response({"status": reason}, status=503)


def ping_response(state: AppState) -> web.Response:
    """RunPod load balancing: 200 ready, 204 still loading or warming, 503 draining."""
    if state.draining or state.leaving:
        return web.json_response({"status": "shutting_down"}, status=503)
    if not state.ready:
        return web.Response(status=204)
    return web.json_response({"status": "ready"})


@routes.get("/ping")
async def ping(request: web.Request) -> web.Response:
    return ping_response(request.app[STATE])


def health_app(state: AppState) -> web.Application:
    """The app for ``--health-port``: only ``/ping``, up from before the model loads (so it can say 204)."""
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/ping", ping)
    return app
