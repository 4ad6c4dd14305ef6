"""The aiohttp application: load and warm the model before the port opens, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import torch
from aiohttp import WSCloseCode, web
from prometheus_client import CollectorRegistry

from batching import MicroBatcher
from engine import Engine, SynthesisItem, warmup_batch_sizes
from observability import Metrics
from server.auth import auth_middleware
from server.openai_api import routes as openai_routes
from server.routes import add_routes
from server.settings import Settings
from server.state import STATE, AppState
from server.voices import VoiceStore
from server.ws import stream_handler

log = logging.getLogger(__name__)
VERSION = "0.1.0"


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> web.Application:
    app = web.Application(middlewares=[auth_middleware(settings.api_key)],
                          client_max_size=settings.max_upload_bytes)
    metrics = Metrics(registry, latency_budget_s=settings.latency_budget_s)
    app[STATE] = AppState(settings=settings, metrics=metrics)
    add_routes(app)
    app.router.add_routes(openai_routes)
    app.router.add_get("/v1/stream", stream_handler)
    app.cleanup_ctx.append(runtime)
    return app


async def runtime(app: web.Application) -> AsyncIterator[None]:
    """Startup (runs before the port opens): load, start the batcher, warm up, load voices."""
    state = app[STATE]
    settings, metrics = state.settings, state.metrics
    started = time.perf_counter()
    log.info("loading model", extra={"model": settings.model, "device": settings.device})
    engine = await asyncio.to_thread(Engine.load, settings.engine_config())
    metrics.startup_seconds.labels("load").set(engine.load_seconds)
    log.info("model loaded", extra={"seconds": round(engine.load_seconds, 3), "device": str(engine.device),
                                    "dtype": str(engine.dtype).removeprefix("torch.")})
    batcher: MicroBatcher[SynthesisItem, np.ndarray] = MicroBatcher(engine, settings.batcher_config(), metrics)
    await batcher.start()
    if settings.warmup:  # on the batcher's own thread: that is where its kernels and caches must be warm
        sizes = warmup_batch_sizes(settings.max_batch_size)
        seconds = await batcher.call_in_worker(engine.warmup, sizes)
        log.info("model warm", extra={"seconds": round(seconds, 3), "batch_sizes": sizes})
    metrics.startup_seconds.labels("warmup").set(engine.warmup_seconds)
    voices = VoiceStore(engine, Path(settings.voices_dir) if settings.voices_dir else None,
                        batcher.call_in_worker)
    await voices.load()
    state.engine, state.batcher, state.voices = engine, batcher, voices
    metrics.queue_capacity.set(settings.max_queue)
    if engine.device.type == "cuda":
        device = engine.device
        metrics.watch_gpu_memory(lambda: torch.cuda.memory_allocated(device),
                                 lambda: torch.cuda.memory_reserved(device))
    metrics.build_info.info({"model": settings.model, "device": str(engine.device), "version": VERSION,
                             "dtype": str(engine.dtype).removeprefix("torch.")})
    total = time.perf_counter() - started
    metrics.startup_seconds.labels("total").set(total)
    state.ready = True
    metrics.ready.set(1)
    log.info("ready", extra={"startup_seconds": round(total, 3)})
    try:
        yield
    finally:
        state.ready = False
        metrics.ready.set(0)
        for connection in list(state.connections):
            connection.close_all()
        await batcher.close(drain=False)


async def drain(app: web.Application) -> None:
    """SIGTERM: readiness off and new streams refused at once; in-flight streams get the grace period;
    then every socket closes with 1001 (going away)."""
    state = app[STATE]
    state.shutting_down = True
    state.ready = False
    state.metrics.ready.set(0)
    deadline = time.monotonic() + state.settings.shutdown_grace_s
    log.info("draining", extra={"active_streams": state.active_streams})
    while state.active_streams > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for connection in list(state.connections):
        connection.close_all()
        await connection.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
    log.info("drained", extra={"unfinished_streams": state.active_streams})


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Run the app's startup (load + warm-up), then listen. Returns the runner and the bound port (port 0
    picks a free one)."""
    # handler_cancellation: a client that disconnects cancels its HTTP handler, which drops its queued chunks.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True)
    await runner.setup()  # runs `runtime` up to its yield: the model is loaded and warm after this
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``). Startup errors propagate to the caller."""
    app = create_app(settings)
    runner, port = await start_site(app, settings.host, settings.port)
    try:
        log.info("listening", extra={"host": settings.host, "port": port})
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await drain(app)
    finally:
        await runner.cleanup()
