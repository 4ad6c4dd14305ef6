"""The aiohttp application, the composition root (core plus the HTTP and WebSocket front ends): load and
warm the model before the port opens, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web
from prometheus_client import CollectorRegistry

from observability import Metrics
from server.agents.routes import setup as add_agent_routes
from server.core.boot import prepare
from server.core.guard import GuardedSite, bind, fd_budget
from server.core.service import Service
from server.core.settings import Settings
from server.core.state import STATE, AppState
from server.http.auth import auth_middleware
from server.http.catalog import routes as catalog_routes
from server.http.health import health_app
from server.http.middleware import body_deadline, cors, json_errors, quiet_parser_errors
from server.http.openai import routes as openai_routes
from server.http.playground import add_playground
from server.http.routes import add_routes
from server.ws.handler import stream_handler

log = logging.getLogger(__name__)


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> web.Application:
    middlewares = [json_errors(), auth_middleware(settings.api_key), body_deadline(settings.body_timeout_s)]
    if settings.cors_origins:
        preflight, cors_headers = cors(settings.cors_origins)
        middlewares.insert(1, preflight)  # inside json_errors, before auth: preflights carry no key
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_upload_bytes)
    if settings.cors_origins:
        app.on_response_prepare.append(cors_headers)
    quiet_parser_errors()
    metrics = Metrics(registry, latency_budget_s=settings.latency_budget_s)
    app[STATE] = AppState(settings=settings, metrics=metrics, service=Service(settings, metrics))
    add_routes(app)
    app.router.add_routes(openai_routes)
    app.router.add_routes(catalog_routes)
    app.router.add_get("/v1/stream", stream_handler)
    add_agent_routes(app)  # Cartesia- and ElevenLabs-compatible endpoints
    add_playground(app)
    app.cleanup_ctx.append(runtime)
    app.on_shutdown.append(drain)
    return app


async def runtime(app: web.Application) -> AsyncIterator[None]:
    """Startup (runs before the port opens): load, voices, warm-up; then the batcher starts."""
    state = app[STATE]
    ready = await prepare(state.settings, state.metrics)
    batcher = ready.batcher
    await batcher.start()
    state.service.attach(ready)
    state.ready = True
    state.metrics.ready.set(1)
    log.info("ready")  # the "startup" line before it has the phases, timed from the process's start
    try:
        yield
    finally:
        state.ready = False
        state.metrics.ready.set(0)
        for connection in list(state.connections):
            connection.cancel_all()
        await batcher.close(drain=False)
        ready.voices.close()
        state.service.attach(None)


async def leave_rotation(app: web.Application, delay_s: float, cut_short: asyncio.Event) -> None:
    """SIGTERM's first step: readiness goes off, so load balancers stop sending new work, while what still
    arrives is served for ``delay_s`` (the time a balancer needs to notice; refusing it would fail requests
    a rolling restart should not lose). ``cut_short`` (SIGINT) ends the wait."""
    state = app[STATE]
    state.leaving = True
    state.ready = False
    state.metrics.ready.set(0)
    log.info("leaving rotation", extra={"drain_delay_s": delay_s, "active_streams": state.service.active})
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(cut_short.wait(), delay_s)


async def drain(app: web.Application) -> None:
    """SIGTERM (the app's shutdown signal): readiness off and new streams refused at once; in-flight
    streams get the grace period; then every socket closes with 1001 (going away). Idempotent."""
    state = app[STATE]
    service = state.service
    if service.draining:
        return
    service.draining = True
    state.ready = False
    state.metrics.ready.set(0)
    deadline = time.monotonic() + state.settings.shutdown_grace_s
    log.info("draining", extra={"active_streams": service.active})
    while service.active > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for connection in list(state.connections):
        connection.cancel_all()
        await connection.close(WSCloseCode.GOING_AWAY, "server shutting down")
    log.info("drained", extra={"unfinished_streams": service.active})


async def start_site(app: web.Application, host: str, port: int,
                     sock: socket.socket | None = None) -> tuple[web.AppRunner, int]:
    """Run the app's startup (load + warm-up), then listen. Returns the runner and the port it bound
    (tests and benches pass port 0 for a free one). The socket is bound first, so a taken port fails
    before minutes of model loading, not after."""
    settings = app[STATE].settings
    sock = sock or bind(host, port)
    # handler_cancellation: a client that disconnects cancels its HTTP handler, which drops its queued chunks.
    # keepalive_timeout doubles as the header timeout (see server/core/guard.py).
    runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True,
                           keepalive_timeout=settings.header_timeout_s)
    try:
        await runner.setup()  # runs `runtime` up to its yield: the model is loaded and warm after this
        await GuardedSite(runner, sock, fd_budget(settings.max_connections)).start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    return runner, int(sock.getsockname()[1])


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``). Startup errors propagate to the caller; a signal during
    startup stops it cleanly. SIGTERM leaves the balancer's rotation for ``--drain-delay-s`` before the
    drain; SIGINT (Ctrl-C at a terminal, or a second signal) skips that wait."""
    stop, interrupted = stop or asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if sig == signal.SIGINT or stop.is_set():
            interrupted.set()  # someone at a terminal, or a second signal: no drain delay
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    sock = bind(settings.host, settings.port)
    app = create_app(settings)
    async with _health_port(app, settings):
        startup = asyncio.create_task(start_site(app, settings.host, settings.port, sock))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({startup, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not startup.done():
            log.info("stopped during startup")
            startup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await startup
            return
        runner, port = startup.result()
        try:
            log.info("listening", extra={"host": settings.host, "port": port})
            await stop.wait()
            await leave_rotation(app, settings.drain_delay_s, interrupted)  # readiness off, still serving
            await app.shutdown()  # drain while still listening, so late clients hear "shutting_down"
        finally:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def _health_port(app: web.Application, settings: Settings) -> AsyncIterator[None]:
    """``--health-port``: answer ``/ping`` (204 while loading) from before startup to the end."""
    if not settings.health_port:
        yield
        return
    runner = web.AppRunner(health_app(app[STATE]), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.health_port).start()
        yield
    finally:
        await runner.cleanup()
