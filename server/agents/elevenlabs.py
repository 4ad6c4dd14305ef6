"""ElevenLabs-compatible WebSockets: ``/v1/text-to-speech/{voice_id}/stream-input`` (one context per socket)
and ``/multi-stream-input`` (contexts by ``context_id``), as ElevenLabs' SDK, Pipecat's
``ElevenLabsTTSService`` and LiveKit's ``elevenlabs.TTS`` speak them.

A context opens with its first message (usually ``{"text": " ", "voice_settings": ...}``); text messages
append; ``flush: true`` makes buffered text speakable now; the end of input is ``{"text": ""}`` on the
single socket and ``close_context: true`` on the multi socket, after which the context's remaining audio
follows and then ``isFinal``. On the multi socket ``{"text": ""}`` is a keep-alive and ``close_socket``
ends everything. Audio messages carry character ``alignment`` (the text as sent) and
``normalizedAlignment`` (as spoken) whose times restart at zero in each message and tile its audio.
"""

from __future__ import annotations

from typing import Any

from aiohttp import WSCloseCode, web

from server.agents import wire
from server.agents.context import AgentContext
from server.agents.elevenlabs_request import Options, options, speed, text_of
from server.agents.formats import AudioOutput
from server.agents.socket import AgentSocket, admission, authorized
from server.agents.timing import CharClock
from server.core.errors import ServiceError
from server.core.events import AudioChunk, ChunkMarks, Event, StreamEnd, StreamFailed
from server.core.service import StreamRequest
from server.core.state import STATE, AppState

TRANSPORT = "elevenlabs"
KEY_HEADERS = ("xi-api-key",)
KEY_PARAMS = ("xi_api_key", "api_key", "authorization")
_CLOSE = {"client": WSCloseCode.POLICY_VIOLATION, "capacity": wire.TRY_AGAIN_LATER,
          "server": WSCloseCode.INTERNAL_ERROR}


class ElevenLabsContext(AgentContext):
    def __init__(self, context_id: str, opts: Options, socket: ElevenLabsSocket, sample_rate: int) -> None:
        super().__init__(context_id, AudioOutput(opts.output, sample_rate), socket.on_event,
                         0.0 if opts.auto_mode else None)
        self.original = CharClock(sample_rate, normalized=False)
        self.normalized = CharClock(sample_rate, normalized=True)

    def take(self, message: dict[str, Any], text: str) -> None:
        self.append(text)
        if message.get("flush") is True or message.get("try_trigger_generation") is True:
            self.flush()


class ElevenLabsSocket(AgentSocket):
    transport = TRANSPORT

    def __init__(self, ws: web.WebSocketResponse, state: AppState, voice: str, opts: Options, multi: bool) -> None:
        super().__init__(ws, state, opts.inactivity_timeout_s)
        self.voice = voice
        self.options = opts
        self.multi = multi
        self._route = "/v1/text-to-speech/{voice_id}/" + ("multi-stream-input" if multi else "stream-input")

    async def handle(self, message: dict[str, Any]) -> None:
        cid = message.get("context_id") if self.multi else ""
        try:
            if self.multi and message.get("close_socket") is True:
                self.cancel_all()
                await self.close(WSCloseCode.OK, "close_socket")
                return
            if not isinstance(cid, str | None) or (isinstance(cid, str) and len(cid) > 128):
                raise ServiceError("bad_request", "context_id must be a string of at most 128 characters")
            await self._context_message(message, cid or "")
        except ServiceError as error:
            self.state.service.refused(TRANSPORT, error, route=self._route)
            await self.refuse(error, cid or None)

    async def _context_message(self, message: dict[str, Any], cid: str) -> None:
        text = text_of(message)
        context = self.contexts.get(cid)
        if message.get("close_context") is True:
            if isinstance(context, ElevenLabsContext):
                context.end()
            return
        if text == "" and self.multi:
            return  # a keep-alive
        if context is None or context.ended:
            if text == "" or (self.multi and message.get("context_id") is None):
                return  # end of input for nothing open, or context-less text on the multi socket: nothing to say
            context = await self._open(cid, message)
            if context is None:
                return
        assert isinstance(context, ElevenLabsContext)
        if text == "":
            context.end()  # the single socket's end of input
            return
        self._check_length(context, text or "")
        context.take(message, text or "")

    def _check_length(self, context: AgentContext, text: str) -> None:
        limit = self.state.settings.max_text_chars
        assert context.stream is not None
        if context.stream.feed.total_chars + len(text) > limit:
            context.cancel("text_too_long")
            self.forget(context)
            raise ServiceError("text_too_long", f"context text would exceed {limit} characters")

    async def _open(self, cid: str, message: dict[str, Any]) -> ElevenLabsContext | None:
        service, opts = self.state.service, self.options
        if sum(1 for c in self.contexts.values() if not c.done) >= self.state.settings.max_streams_per_socket:
            raise ServiceError("too_many_streams", "too many contexts are open on this socket")
        await service.load_voice(self.voice)
        context = ElevenLabsContext(cid, opts, self, service.runtime.engine.sample_rate)
        request = StreamRequest(id=cid or "stream-input", text="", voice=self.voice,
                                synthesis={"speed": speed(message)}, final=False,
                                normalize=opts.normalize, lang=opts.lang, marks=True)
        try:
            context.open(service, request, TRANSPORT)
        except ServiceError as error:  # counted by the service
            await self.refuse(error, cid or None)
            return None
        self.contexts[cid] = context
        return context

    async def on_event(self, context: AgentContext, event: Event) -> None:
        assert isinstance(context, ElevenLabsContext)
        cid = context.id if self.multi else None
        if isinstance(event, ChunkMarks):
            context.original.announce(event)
            context.normalized.announce(event)
        elif isinstance(event, AudioChunk):
            first = context.samples_sent
            context.samples_sent += len(event.pcm) // 2
            audio = context.output.push(event.pcm)
            alignment = context.original.message(first, context.samples_sent)
            normalized = context.normalized.message(first, context.samples_sent)
            if audio or alignment:
                await self.send(wire.elevenlabs_audio(audio, alignment, normalized, cid))
        elif isinstance(event, StreamEnd):
            if tail := context.output.finish():
                await self.send(wire.elevenlabs_audio(tail, None, None, cid))
            self.forget(context)
            await self.send(wire.elevenlabs_final(cid))
            if not self.multi:
                await self.close(WSCloseCode.OK, "done")
        elif isinstance(event, StreamFailed):
            self.forget(context)
            await self.refuse(event.error, cid)

    async def refuse(self, error: ServiceError, context_id: str | None = None) -> None:
        await self.send(wire.elevenlabs_error(error, context_id))
        if not self.multi:  # the single socket has nothing left to go on with
            await self.close(_CLOSE[error.kind.fault], error.code)


async def websocket(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    settings = state.settings
    multi = request.path.endswith("/multi-stream-input")
    if not authorized(request, settings.api_key, KEY_HEADERS, KEY_PARAMS):
        return wire.elevenlabs_http_error(ServiceError("unauthorized", "missing or wrong API key (xi-api-key)"))
    try:
        opts = options(request.query, settings.model, default_timeout_s=20.0)
    except ServiceError as error:
        state.service.refused(TRANSPORT, error, route=request.path)
        return wire.elevenlabs_http_error(error)
    ws = web.WebSocketResponse(max_msg_size=settings.max_message_bytes, heartbeat=settings.heartbeat_s or None)
    await ws.prepare(request)
    socket = ElevenLabsSocket(ws, state, request.match_info["voice_id"], opts, multi)
    if (refusal := admission(state)) is not None:
        await socket.send(wire.elevenlabs_error(refusal, None))
        await socket.close(wire.TRY_AGAIN_LATER, refusal.code)
        return ws
    await socket.serve(socket.handle, socket.refuse)
    return ws
