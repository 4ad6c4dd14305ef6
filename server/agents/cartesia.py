"""Cartesia-compatible WebSocket ``/tts/websocket``: Cartesia's clients (its SDK, Pipecat's
``CartesiaTTSService``, LiveKit's ``cartesia.TTS``) work unchanged with this server's URL.

Generation requests carry a ``context_id``; ``continue: true`` keeps the context open for more transcript,
``continue: false`` (often with an empty transcript) ends its input; ``flush: true`` makes the buffered
transcript speakable now and is answered by ``flush_done`` once its audio was sent; ``{"context_id",
"cancel": true}`` stops a context at once. The server sends ``chunk`` (base64 audio), ``timestamps``
(``add_timestamps``), ``done`` and ``error`` messages, each with its ``context_id``; the socket stays open
across contexts and errors.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from aiohttp import web

from server.agents import wire
from server.agents.cartesia_request import CartesiaRequest, parse
from server.agents.context import AgentContext, nonspace
from server.agents.formats import AudioOutput
from server.agents.socket import AgentSocket, admission, authorized
from server.agents.timing import word_timestamps
from server.core.errors import ServiceError
from server.core.events import AudioChunk, ChunkMarks, Event, StreamEnd, StreamFailed
from server.core.state import STATE

TRANSPORT = "cartesia"
KEY_HEADERS = ("X-API-Key",)
KEY_PARAMS = ("api_key", "access_token")


class CartesiaContext(AgentContext):
    def __init__(self, request: CartesiaRequest, socket: CartesiaSocket, sample_rate: int) -> None:
        super().__init__(request.context_id, AudioOutput(request.output, sample_rate), socket.on_event,
                         request.buffer_delay_s)
        self.add_timestamps = request.add_timestamps
        self.normalized = request.normalized_timestamps
        self.given = 0  # non-space characters received
        self.voiced = 0  # non-space characters whose chunk was announced
        self.flushes = 0
        self._waiting: deque[tuple[int, int]] = deque()  # (flush id, characters it covers)
        self._due: deque[tuple[int, int]] = deque()  # (flush id, sample after which it is done)

    def take(self, request: CartesiaRequest) -> None:
        """A generation request for this open context: its transcript, flush and end of input."""
        self.given += nonspace(request.transcript)
        self.append(request.transcript)
        if request.flush:
            self.flushes += 1
            self._waiting.append((self.flushes, self.given))
            self.flush()
        if not request.cont:
            self.end()

    def announced(self, marks: ChunkMarks) -> None:
        self._settle(marks.start_sample)
        self.voiced += nonspace(marks.text)
        self._settle(marks.end_sample)

    def _settle(self, sample: int) -> None:
        while self._waiting and self._waiting[0][1] <= self.voiced:
            self._due.append((self._waiting.popleft()[0], sample))

    def flushed(self, everything: bool = False) -> list[int]:
        """Flush ids whose audio has all been sent (all of them at the end of the context)."""
        if everything:
            self._due.extend((flush_id, 0) for flush_id, _ in self._waiting)
            self._waiting.clear()
        done = []
        while self._due and (everything or self._due[0][1] <= self.samples_sent):
            done.append(self._due.popleft()[0])
        return done


class CartesiaSocket(AgentSocket):
    transport = TRANSPORT

    async def handle(self, data: dict[str, Any]) -> None:
        context_id = data.get("context_id")
        if data.get("cancel") is True:
            context = self.contexts.pop(str(context_id), None)
            if context is not None:
                context.cancel()
            return
        try:
            request = parse(data, self.state.settings.model)
            context = self.contexts.get(request.context_id)
            if isinstance(context, CartesiaContext) and not context.ended and not context.done:
                await self._take(context, request)
            else:
                await self._open(request)
        except ServiceError as error:
            self.state.service.refused(TRANSPORT, error, route="/tts/websocket")
            await self.refuse(error, context_id if isinstance(context_id, str) else None)

    async def _take(self, context: CartesiaContext, request: CartesiaRequest) -> None:
        """More input for an open context. Too much text ends the context: playing on would drop words."""
        limit = self.state.settings.max_text_chars
        assert context.stream is not None
        if context.stream.feed.total_chars + len(request.transcript) > limit:
            context.cancel("text_too_long")
            self.forget(context)
            await self.refuse(ServiceError("text_too_long", f"context text would exceed {limit} characters"),
                              context.id)
            return
        context.take(request)

    async def _open(self, request: CartesiaRequest) -> None:
        """A new context: complete (``continue: false``, SSML allowed) or incremental, fed through ``take``."""
        service = self.state.service
        if not request.cont and not request.transcript.strip():
            await self.send(wire.cartesia_done(request.context_id))  # input ended with nothing to say
            return
        if sum(1 for c in self.contexts.values() if not c.done) >= self.state.settings.max_streams_per_socket:
            raise ServiceError("too_many_streams", "too many contexts are open on this socket")
        await service.load_voice(request.voice)
        context = CartesiaContext(request, self, service.runtime.engine.sample_rate)
        try:
            context.open(service, request.stream_request(final=not request.cont), TRANSPORT)
        except ServiceError as error:  # counted by the service
            await self.refuse(error, request.context_id)
            return
        self.contexts[request.context_id] = context
        if request.cont:
            context.take(request)

    async def on_event(self, context: AgentContext, event: Event) -> None:
        assert isinstance(context, CartesiaContext)
        if isinstance(event, ChunkMarks):
            context.announced(event)
            if context.add_timestamps and (stamps := word_timestamps(event, context.sample_rate,
                                                                     context.normalized))["words"]:
                await self.send(wire.cartesia_timestamps(context.id, stamps))
        elif isinstance(event, AudioChunk):
            context.samples_sent += len(event.pcm) // 2
            await self._chunk(context, context.output.push(event.pcm))
            for flush_id in context.flushed():
                await self.send(wire.cartesia_flush_done(context.id, flush_id))
        elif isinstance(event, StreamEnd):
            await self._chunk(context, context.output.finish())
            for flush_id in context.flushed(everything=True):
                await self.send(wire.cartesia_flush_done(context.id, flush_id))
            self.forget(context)
            await self.send(wire.cartesia_done(context.id))
        elif isinstance(event, StreamFailed):
            self.forget(context)
            await self.refuse(event.error, context.id)

    async def _chunk(self, context: CartesiaContext, audio: bytes) -> None:
        if audio:
            await self.send(wire.cartesia_chunk(context.id, audio))

    async def refuse(self, error: ServiceError, context_id: str | None = None) -> None:
        await self.send(wire.cartesia_error(error, context_id))


async def websocket(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    settings = state.settings
    if not authorized(request, settings.api_key, KEY_HEADERS, KEY_PARAMS):
        return wire.cartesia_http_error(ServiceError("unauthorized", "missing or wrong API key"))
    ws = web.WebSocketResponse(max_msg_size=settings.max_message_bytes, heartbeat=settings.heartbeat_s or None)
    await ws.prepare(request)
    socket = CartesiaSocket(ws, state, settings.idle_timeout_s)
    if (refusal := admission(state)) is not None:
        await socket.refuse(refusal)
        await socket.close(wire.TRY_AGAIN_LATER, refusal.code)
        return ws
    await socket.serve(socket.handle, socket.refuse)
    return ws
