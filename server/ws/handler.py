"""The WebSocket endpoint ``/v1/stream``: many streams (ids) multiplexed on one socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from aiohttp import WSCloseCode, WSMsgType, web

from engine import EngineError, InvalidParameterError, SynthesisItem, Voice
from engine.synthesis import check_parameters
from server.core.state import STATE, AppState
from server.core.stream import Stream, StreamParams
from server.core.textfeed import TextFeed
from server.ws.protocol import (
    Append,
    AudioStart,
    Cancel,
    ClientMessage,
    End,
    ErrorMessage,
    Flush,
    ProtocolError,
    Synthesize,
    parse_client_message,
)

log = logging.getLogger(__name__)


class Connection:
    """One client socket and its open streams."""

    def __init__(self, ws: web.WebSocketResponse, state: AppState) -> None:
        self.ws = ws
        self.state = state
        self.streams: dict[str, Stream] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._numbers = 0
        self._send_lock = asyncio.Lock()
        self.last_activity = time.monotonic()

    # Sink ------------------------------------------------------------------------------------------
    async def send_text(self, data: str) -> None:
        async with self._send_lock:
            await self.ws.send_str(data)
        self.last_activity = time.monotonic()

    async def send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(data)
        self.last_activity = time.monotonic()

    async def send_error(self, error: ProtocolError) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send_text(ErrorMessage.from_error(error).to_json())

    # Messages --------------------------------------------------------------------------------------
    async def handle_text(self, raw: str) -> None:
        self.last_activity = time.monotonic()
        message: ClientMessage | None = None
        try:
            message = parse_client_message(raw)
            await self._dispatch(message)
        except ProtocolError as error:
            # An error naming an open stream ends it: refusing an append but playing on would drop words.
            stream = self.streams.get(error.request_id or "")
            if stream is not None:
                self._cancel(stream.id, outcome=error.code)
            elif isinstance(message, Synthesize):  # a refused request still counts as a request
                self.state.metrics.request_finished("ws", error.code)
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
            raise ProtocolError("bad_request", f"no open stream with id {message.id!r}", message.id)
        feed = stream.feed
        if feed.ended:
            raise ProtocolError("bad_request", f"stream {message.id!r} takes no more text (final or ended)",
                                message.id)
        if isinstance(message, Append):
            self._check_append(message, feed)
            feed.append(message.text)
        elif isinstance(message, Flush):
            feed.flush()
        elif isinstance(message, End):
            feed.end()

    def _check_append(self, message: Append, feed: TextFeed) -> None:
        settings = self.state.settings
        if len(message.text) > settings.max_append_chars:
            raise ProtocolError("text_too_long", f"append text is {len(message.text)} characters; the limit is "
                                f"{settings.max_append_chars}", message.id)
        if feed.total_chars + len(message.text) > settings.max_text_chars:
            raise ProtocolError("text_too_long", f"stream text would exceed {settings.max_text_chars} characters",
                                message.id)

    async def _open(self, request: Synthesize) -> None:
        state, settings = self.state, self.state.settings
        rid = request.id
        if state.shutting_down:
            raise ProtocolError("shutting_down", "the server is shutting down; reconnect elsewhere", rid)
        if rid in self.streams:  # no id on this error: the open stream of that id is not affected
            raise ProtocolError("bad_request", f"id {rid!r} is already open on this socket", None)
        if len(self.streams) >= settings.max_streams_per_socket:
            raise ProtocolError("too_many_streams", f"at most {settings.max_streams_per_socket} streams may be "
                                "open on one socket", rid)
        if len(request.text) > settings.max_text_chars:
            raise ProtocolError("text_too_long", f"text is {len(request.text)} characters; the limit is "
                                f"{settings.max_text_chars}", rid)
        engine, batcher, voices = state.serving()
        voice = voices.get(request.voice)
        if voice is None:
            raise ProtocolError("unknown_voice", f"no voice {request.voice!r}; see GET /v1/voices", rid)
        params = self._params(request, voice)
        if request.final:
            if not request.text.strip():
                raise ProtocolError("bad_request", "text is empty", rid)
            try:  # whole-text check: speakable at all, and parameters in range
                engine.validate(SynthesisItem(request.text, voice, params.speed, params.nfe_steps,
                                              params.cfg_strength, params.sway_sampling_coef, params.seed))
            except EngineError as exc:
                raise ProtocolError("bad_request", str(exc), rid) from None
        limit = engine.chunk_limit(voice, params.speed)
        feed = TextFeed.complete(request.text, limit) if request.final else TextFeed(limit)
        if not request.final and request.text:
            feed.append(request.text)
        self._numbers += 1
        stream = Stream(rid, self._numbers, params, feed, engine, batcher, self, state.metrics,
                        retry_until_s=settings.queue_timeout_s)
        await self.send_text(AudioStart(id=rid, stream=stream.number, sample_rate=engine.sample_rate,
                                        seed=params.seed).to_json())
        self.streams[rid] = stream
        state.active_streams += 1
        state.metrics.inflight.labels("ws").inc()
        task = asyncio.create_task(stream.run(), name=f"stream-{rid}")
        self.tasks[rid] = task
        task.add_done_callback(lambda _t: self._closed(rid, stream))

    def _params(self, request: Synthesize, voice: Voice) -> StreamParams:
        nfe = request.nfe_steps if request.nfe_steps is not None else self.state.settings.default_nfe_steps
        try:
            check_parameters(request.speed, nfe, request.cfg_strength, request.sway_sampling_coef)
        except InvalidParameterError as exc:
            raise ProtocolError("bad_request", str(exc), request.id) from None
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        if not 0 <= seed < 2**31:
            raise ProtocolError("bad_request", "seed must be between 0 and 2^31-1", request.id)
        return StreamParams(voice=voice, speed=float(request.speed), nfe_steps=nfe,
                            cfg_strength=float(request.cfg_strength),
                            sway_sampling_coef=float(request.sway_sampling_coef), seed=seed)

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
            stream.record_cancelled()  # no-op unless the stream's task was cancelled before it started
            del self.streams[rid]
            self.tasks.pop(rid, None)
            self.state.active_streams -= 1
            self.state.metrics.inflight.labels("ws").dec()

    def close_all(self) -> None:
        for rid in list(self.streams):
            self._cancel(rid)


async def stream_handler(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE]
    settings = state.settings
    ws = web.WebSocketResponse(max_msg_size=settings.max_message_bytes,
                               heartbeat=settings.heartbeat_s or None)
    await ws.prepare(request)
    if state.shutting_down or len(state.connections) >= settings.max_sockets:
        code = "shutting_down" if state.shutting_down else "too_many_sockets"
        await ws.send_str(ErrorMessage(code, "the server is shutting down" if state.shutting_down else
                                       f"at most {settings.max_sockets} sockets are served at once").to_json())
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=code.encode())
        return ws
    connection = Connection(ws, state)
    state.connections.add(connection)
    watchdog = asyncio.create_task(_idle_watchdog(connection, settings.idle_timeout_s))
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await connection.handle_text(message.data)
            elif message.type == WSMsgType.BINARY:
                await connection.send_error(ProtocolError(
                    "bad_request", "binary frames are not accepted; send JSON text messages"))
            elif message.type == WSMsgType.ERROR:
                log.info("websocket error: %s", ws.exception())
                break
    finally:
        watchdog.cancel()
        connection.close_all()
        state.connections.discard(connection)
    return ws


async def _idle_watchdog(connection: Connection, idle_timeout_s: float) -> None:
    while True:
        await asyncio.sleep(min(idle_timeout_s, 5.0))
        idle = time.monotonic() - connection.last_activity
        if not connection.streams and idle >= idle_timeout_s:
            await connection.ws.close(code=WSCloseCode.OK, message=b"idle timeout")
            return
