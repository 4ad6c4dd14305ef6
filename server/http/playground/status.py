"""``GET /v1/status``: a small JSON view of the server for the playground's live panel.

Prometheus histograms keep totals, not recent values, so "recent" batch sizes and TTFA are derived here:
each status read compares the histograms' running count and sum with the previous read and records the
mean of what happened in between (exact when one batch or one request fell in the interval; the page
polls every second, so that is the usual case).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from observability.metrics import TRANSPORTS
from server.core.errors import ServiceError
from server.core.state import STATE

RECENT = 30
"""How many recent intervals the status keeps."""


class QueueView(Protocol):
    """What the status reads from either batcher (request-level or step-level)."""

    @property
    def queued(self) -> int: ...
    @property
    def queued_frames(self) -> int: ...
    @property
    def running(self) -> int: ...


@dataclass(frozen=True)
class Figures:
    """What the status needs from the server, read at one moment."""

    ready: bool
    shutting_down: bool
    queue_depth: int
    """Chunks waiting for a batch."""
    queue_frames: int
    """Mel frames waiting for a batch."""
    running: int
    """Chunks in the batch on the model now."""
    inflight: dict[str, int]
    """Requests being served, per transport (ws, http, runpod)."""
    active_streams: int
    sockets: int
    batches: int
    """Model batches run since startup."""
    batch_items: float
    """Sum of all batch sizes since startup (the tts_batch_size histogram's sum)."""
    ttfa_count: float
    ttfa_sum_s: float
    max_batch_size: int
    model: str


def read_figures(app: web.Application) -> Figures:
    """The one place that reads AppState, its batcher and its metrics (adapt here when they change)."""
    state = app[STATE]
    registry = state.metrics.registry

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    try:
        batcher: QueueView | None = state.runtime.batcher
    except ServiceError:  # not started yet, or stopped
        batcher = None
    return Figures(
        ready=state.ready and not state.draining, shutting_down=state.draining,
        queue_depth=batcher.queued if batcher else 0, queue_frames=batcher.queued_frames if batcher else 0,
        running=batcher.running if batcher else 0,
        inflight={t: int(sample("tts_inflight_requests", transport=t)) for t in TRANSPORTS},
        active_streams=state.service.active, sockets=len(state.connections),
        batches=int(sample("tts_batch_size_count")), batch_items=sample("tts_batch_size_sum"),
        ttfa_count=sum(sample("tts_time_to_first_audio_seconds_count", transport=t) for t in TRANSPORTS),
        ttfa_sum_s=sum(sample("tts_time_to_first_audio_seconds_sum", transport=t) for t in TRANSPORTS),
        max_batch_size=state.settings.max_batch_size, model=state.settings.model,
    )


@dataclass
class Recent:
    """Recent batch sizes and TTFA, as means over the intervals between status reads."""

    batches: float = 0.0
    batch_items: float = 0.0
    ttfa_count: float = 0.0
    ttfa_sum_s: float = 0.0
    batch_sizes: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    ttfa_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))

    def update(self, figures: Figures) -> None:
        if figures.batches > self.batches:
            self.batch_sizes.append(round((figures.batch_items - self.batch_items)
                                          / (figures.batches - self.batches), 2))
        if figures.ttfa_count > self.ttfa_count:
            self.ttfa_ms.append(round(1000 * (figures.ttfa_sum_s - self.ttfa_sum_s)
                                      / (figures.ttfa_count - self.ttfa_count), 1))
        self.batches, self.batch_items = figures.batches, figures.batch_items
        self.ttfa_count, self.ttfa_sum_s = figures.ttfa_count, figures.ttfa_sum_s


RECENT_KEY = web.AppKey("playground_recent", Recent)


async def status(request: web.Request) -> web.Response:
    figures = read_figures(request.app)
    recent = request.app[RECENT_KEY]
    recent.update(figures)
    body: dict[str, Any] = {
        "ready": figures.ready,
        "shutting_down": figures.shutting_down,
        "model": figures.model,
        "queue": {"depth": figures.queue_depth, "frames": figures.queue_frames, "running": figures.running},
        "inflight": figures.inflight,
        "streams": figures.active_streams,
        "sockets": figures.sockets,
        "batches": {"total": figures.batches, "max_size": figures.max_batch_size,
                    "recent_sizes": list(recent.batch_sizes)},
        "ttfa_ms": {"recent": list(recent.ttfa_ms)},
        "time": round(time.time(), 3),
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})
