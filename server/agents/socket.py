"""What both agent WebSockets share: the API key (each protocol names it its own way), socket admission,
the open contexts, serialised sends, the idle timer, and the clean-up when the socket ends."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from server.agents.context import AgentContext
from server.core.errors import ServiceError
from server.core.state import AppState

log = logging.getLogger(__name__)


def presented_key(request: web.Request, headers: tuple[str, ...], params: tuple[str, ...]) -> str:
    """The key from the first of ``headers`` (or a bearer token), else the first of ``params``."""
    for name in headers:
        if value := request.headers.get(name, ""):
            return value.strip()
    bearer = request.headers.get("Authorization", "")
    if bearer[:7].lower() == "bearer ":
        return bearer[7:].strip()
    return next((request.query[name] for name in params if request.query.get(name)), "")


def authorized(request: web.Request, api_key: str, headers: tuple[str, ...], params: tuple[str, ...]) -> bool:
    return not api_key or hmac.compare_digest(presented_key(request, headers, params).encode(), api_key.encode())


def admission(state: AppState) -> ServiceError | None:
    """Why a new socket is refused now, if it is (draining, or the server's socket cap)."""
    if state.draining:
        return ServiceError("shutting_down", "the server is shutting down", retry_after_ms=1000)
    if len(state.connections) >= state.settings.max_sockets:
        return state.service.busy_error("too_many_sockets",
                                        f"at most {state.settings.max_sockets} sockets are served at once")
    return None


class AgentSocket:
    """One client socket of an agent protocol, with its contexts by id."""

    transport = "agent"

    def __init__(self, ws: web.WebSocketResponse, state: AppState, idle_timeout_s: float) -> None:
        self.ws = ws
        self.state = state
        self.idle_timeout_s = idle_timeout_s
        self.contexts: dict[str, AgentContext] = {}
        self.last_activity = time.monotonic()
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, object]) -> None:
        if self.ws.closed:
            raise ConnectionResetError("the WebSocket is closed")
        async with self._lock:
            await self.ws.send_str(orjson.dumps(message).decode())
        self.last_activity = time.monotonic()

    async def serve(self, handle: Callable[[dict[str, object]], Awaitable[None]],
                    refuse: Callable[[ServiceError], Awaitable[None]]) -> None:
        """The message loop: JSON objects to ``handle``; anything else is refused through ``refuse``."""
        self.state.connections.add(self)
        watchdog = asyncio.create_task(self._idle_watchdog())
        try:
            async for message in self.ws:
                if message.type == WSMsgType.TEXT:
                    await self._dispatch(message.data, handle, refuse)
                elif message.type == WSMsgType.BINARY:
                    await refuse(ServiceError("bad_request", "send JSON text messages, not binary frames"))
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            watchdog.cancel()
            self.cancel_all()
            self.state.connections.discard(self)

    async def _dispatch(self, raw: str, handle: Callable[[dict[str, object]], Awaitable[None]],
                        refuse: Callable[[ServiceError], Awaitable[None]]) -> None:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            await refuse(ServiceError("bad_request", "each message must be a JSON object"))
            return
        self.last_activity = time.monotonic()
        with contextlib.suppress(ConnectionError):
            await handle(data)

    def forget(self, context: AgentContext) -> None:
        if self.contexts.get(context.id) is context:
            del self.contexts[context.id]

    def cancel_all(self) -> None:
        for context in list(self.contexts.values()):
            context.cancel()
        self.contexts.clear()

    async def close(self, code: int = WSCloseCode.OK, reason: str = "") -> None:
        await self.ws.close(code=code, message=reason.encode())

    async def _idle_watchdog(self) -> None:
        while True:
            await asyncio.sleep(min(self.idle_timeout_s, 5.0))
            busy = any(not c.done for c in self.contexts.values())
            if not busy and time.monotonic() - self.last_activity >= self.idle_timeout_s:
                await self.close(WSCloseCode.OK, "idle timeout")
                return
