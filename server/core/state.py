"""Typed application state, stored under one ``web.AppKey``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from observability import Metrics
from server.core.boot import Runtime
from server.core.service import Service
from server.core.settings import Settings


class Connection(Protocol):
    """A long-lived client connection (a WebSocket) the app must be able to end."""

    def cancel_all(self) -> None:
        """Cancel every stream the connection has open."""

    async def close(self, code: int, reason: str) -> None: ...


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    service: Service
    connections: set[Connection] = field(default_factory=set)
    ready: bool = False
    leaving: bool = False
    """SIGTERM arrived: readiness is off, so balancers stop sending, while new streams are still served for
    the drain delay; ``draining`` (refusing new work) follows."""

    @property
    def runtime(self) -> Runtime:
        """Engine, batcher and voices; raises ``ServiceError`` before startup finished."""
        return self.service.runtime

    @property
    def draining(self) -> bool:
        return self.service.draining


STATE = web.AppKey("state", AppState)
