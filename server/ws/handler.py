"""The WebSocket endpoint ``/v1/stream``: many streams (ids) multiplexed on one socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import WSCloseCode, WSMsgType, web

from server.core.errors import ServiceError
from server.core.events import AudioChunk, ChunkMarks, Event, StreamEnd, StreamFailed
from server.core.service import StreamRequest
from server.core.state import STATE, AppState
from server.core.stream import Stream
from server.ws.protocol import (
    FRAME_HEADER,
    Append,
    AudioEnd,
    AudioStart,
    Cancel,
    ClientMessage,
    End,
    ErrorMessage,
    Flush,
    Marks,
    Synthesize,
    parse_client_message,
)

log = logging.getLogger(__name__)


class Connection:
    """One client socket and its open streams; the streams' sink."""

    def __init__(self, ws: web.WebSocketResponse, state: AppState, client: str = "") -> None:
        self.ws = ws
        self.state = state
        self.client = client
        """The peer's address, for the per-address socket cap."""
        self.streams: dict[str, Stream] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._numbers = 0
        self._send_lock = asyncio.Lock()
        self.last_activity = time.monotonic()
        """When synthesis last happened here (audio sent, text accepted): only that keeps a socket open."""

    # -- sending -------------------------------------------------------------------------------------

    async def emit(self, stream: Stream, event: Event) -> None:
        if isinstance(event, AudioChunk):
            await self._send(FRAME_HEADER.pack(stream.number, event.seq) + event.pcm)
        elif isinstance(event, ChunkMarks):
            await self._send(Marks(stream.id, stream.number, event).to_json())
        elif isinstance(event, StreamEnd):
            await self._send(AudioEnd(stream.id, stream.number, event).to_json())
        elif isinstance(event, StreamFailed):
            await self._send(ErrorMessage.from_error(event.error).to_json())

    async def _send(self, data: str | bytes) -> None:
        if self.ws.closed:
            raise ConnectionResetError("the WebSocket is closed")
        async with self._send_lock:
            if isinstance(data, bytes):
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(data)
        self.last_activity = time.monotonic()

    async def send_error(self, error: ServiceError) -> None:
        with contextlib.suppress(ConnectionError):
            await self._send(ErrorMessage.from_error(error).to_json())

    # -- messages ------------------------------------------------------------------------------------

    async def handle_text(self, raw: str) -> None:
        message: ClientMessage | None = None
        try:
            message = parse_client_message(raw)
            await self._dispatch(message)
            if not isinstance(message, Cancel):  # a cancel every few seconds must not keep a socket alive
                self.last_activity = time.monotonic()
        except ServiceError as error:
            # An error naming an open stream ends it: refusing an append but playing on would drop words.
            stream = self.streams.get(error.request_id or "")
            if stream is not None:
                self._cancel(stream.id, outcome=error.code)
            elif isinstance(message, Synthesize):
                self.state.service.refused("ws", error)  # a refused request still counts as a request
            await self.send_error(error)

    async def _dispatch(self, message: ClientMessage) -> None:
        if isinstance(message, Synthesize):
            await self._open(message)
            return
        if isinstance(message, Cancel):
            self._cancel(message.id)
            return
        stream = self.streams.get(message.id)
        if stream is None:
            raise ServiceError("bad_request", f"no open stream with id {message.id!r}", message.id)
        if stream.feed.ended:
            raise ServiceError("bad_request", f"stream {message.id!r} takes no more text (final or ended)",
                               message.id)
        if isinstance(message, Append):
            self._check_append(message, stream)
            stream.feed.append(message.text)
        elif isinstance(message, Flush):
            stream.feed.flush()
        elif isinstance(message, End):
            stream.feed.end()

    def _check_append(self, message: Append, stream: Stream) -> None:
        settings = self.state.settings
        if len(message.text) > settings.max_append_chars:
            raise ServiceError("text_too_long", f"append text is {len(message.text)} characters; the limit is "
                               f"{settings.max_append_chars}", message.id)
        if stream.feed.total_chars + len(message.text) > settings.max_text_chars:
            raise ServiceError("text_too_long", f"stream text would exceed {settings.max_text_chars} characters",
                               message.id)

    async def _open(self, message: Synthesize) -> None:
        rid, service = message.id, self.state.service
        if rid in self.streams:
            # No id on this error: the open stream of that id is not affected, and nothing is counted.
            raise ServiceError("bad_request", f"id {rid!r} is already open on this socket", None)
        limit = self.state.settings.max_streams_per_socket
        if len(self.streams) >= limit:
            raise ServiceError("too_many_streams", f"at most {limit} streams may be open on one socket", rid)
        request = StreamRequest(
            id=rid, text=message.text, voice=message.voice, speed=message.speed, nfe_steps=message.nfe_steps,
            cfg_strength=message.cfg_strength, sway_sampling_coef=message.sway_sampling_coef, seed=message.seed,
            final=message.final, normalize=message.normalize, lang=message.lang, marks=message.marks)
        try:
            stream = service.open(request, "ws", self, number=self._numbers + 1)
        except ServiceError as error:
            await self.send_error(error)  # already counted by the service
            return
        self._numbers += 1
        await self._send(AudioStart(id=rid, stream=stream.number, sample_rate=stream.engine.sample_rate,
                                    seed=stream.params.seed).to_json())
        self.streams[rid] = stream
        self.tasks[rid] = service.start(stream)
        self.tasks[rid].add_done_callback(lambda _t: self._closed(rid, stream))

    def _cancel(self, rid: str, outcome: str = "cancelled") -> None:
        """Cancel a stream: its queued chunks leave the queue now and nothing more is sent for it.
        Cancelling an id that is not open (e.g. just finished) is not an error."""
        stream = self.streams.get(rid)
        if stream is not None:
            stream.cancel(outcome)
            self.tasks[rid].cancel()
            self._closed(rid, stream)

    def _closed(self, rid: str, stream: Stream) -> None:
        if self.streams.get(rid) is stream:
            del self.streams[rid]
            self.tasks.pop(rid, None)

    def cancel_all(self) -> None:
        for rid in list(self.streams):
            self._cancel(rid)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())


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
        return ServiceError("shutting_down", "the server is shutting down")
    if len(state.connections) >= settings.max_sockets:
        return ServiceError("too_many_sockets", f"at most {settings.max_sockets} sockets are served at once")
    per_client = settings.max_sockets_per_client
    if per_client and sum(1 for c in state.connections if getattr(c, "client", None) == client) >= per_client:
        return ServiceError("too_many_sockets", f"at most {per_client} sockets per client address")
    return None


async def _idle_watchdog(connection: Connection, idle_timeout_s: float) -> None:
    while True:
        await asyncio.sleep(min(idle_timeout_s, 5.0))
        idle = time.monotonic() - connection.last_activity
        if not connection.streams and idle >= idle_timeout_s:
            await connection.close(WSCloseCode.OK, "idle timeout")
            return
