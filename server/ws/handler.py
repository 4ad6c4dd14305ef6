"""The WebSocket endpoint ``/v1/stream``: admission of sockets (caps, draining), the message loop, the
idle watchdog, and releasing the socket at the end. Per-socket state lives in ``server.ws.connection``."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSCloseCode, WSMsgType, web

from server.core.errors import ServiceError
from server.core.state import STATE, AppState
from server.ws.connection import Connection
from server.ws.protocol import ErrorMessage

log = logging.getLogger(__name__)


async def stream_handler(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE]
    settings = state.settings
    ws = web.WebSocketResponse(max_msg_size=settings.max_message_bytes, heartbeat=settings.heartbeat_s or None)
    await ws.prepare(request)
    refusal = _refusal(state, _client(request))
    if refusal is not None:
        await ws.send_str(ErrorMessage.from_error(refusal).to_json())
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=refusal.code.encode())
        return ws
    connection = Connection(ws, state, _client(request))
    state.connections.add(connection)
    watchdog = asyncio.create_task(_idle_watchdog(connection, settings.idle_timeout_s))
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await connection.handle_text(message.data)
            elif message.type == WSMsgType.BINARY:
                await connection.send_error(ServiceError(
                    "bad_request", "binary frames are not accepted; send JSON text messages"))
            elif message.type == WSMsgType.ERROR:
                log.info("websocket error: %s", ws.exception())
                break
    finally:
        watchdog.cancel()
        connection.cancel_all()
        state.connections.discard(connection)
        _release(request)
    return ws


def _client(request: web.Request) -> str:
    return request.remote or ""


def _release(request: web.Request) -> None:
    """A socket closed on a client that stopped reading (heartbeat timeout) still has its unsent audio
    buffered, and a graceful close would wait for it forever: abort, so the fd is released now."""
    transport = request.transport
    if transport is not None and transport.get_write_buffer_size() > 0:
        transport.abort()


def _refusal(state: AppState, client: str) -> ServiceError | None:
    settings = state.settings
    if state.draining:
        return ServiceError("shutting_down", "the server is shutting down", retry_after_ms=1000)
    if len(state.connections) >= settings.max_sockets:
        return state.service.busy_error("too_many_sockets",
                                        f"at most {settings.max_sockets} sockets are served at once")
    per_client = settings.max_sockets_per_client
    if per_client and sum(1 for c in state.connections if getattr(c, "client", None) == client) >= per_client:
        return state.service.busy_error("too_many_sockets", f"at most {per_client} sockets per client address")
    return None


async def _idle_watchdog(connection: Connection, idle_timeout_s: float) -> None:
    while True:
        await asyncio.sleep(min(idle_timeout_s, 5.0))
        idle = time.monotonic() - connection.last_activity
        if not connection.streams and idle >= idle_timeout_s:
            await connection.close(WSCloseCode.OK, "idle timeout")
            return
