"""Typed application state, stored under one ``web.AppKey``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from aiohttp import web

from batching import MicroBatcher
from engine import Engine, SynthesisItem
from observability import Metrics
from server.core.settings import Settings

if TYPE_CHECKING:
    from server.core.voices import VoiceStore
    from server.ws.handler import Connection


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    engine: Engine | None = None
    batcher: MicroBatcher[SynthesisItem, np.ndarray] | None = None
    voices: VoiceStore | None = None
    connections: set[Connection] = field(default_factory=set)
    ready: bool = False
    shutting_down: bool = False
    active_streams: int = 0

    def serving(self) -> tuple[Engine, MicroBatcher[SynthesisItem, np.ndarray], VoiceStore]:
        assert self.engine is not None and self.batcher is not None and self.voices is not None
        return self.engine, self.batcher, self.voices


STATE = web.AppKey("state", AppState)
