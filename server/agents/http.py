"""The agent protocols' HTTP endpoints: Cartesia's ``POST /tts/bytes`` (audio) and ``POST /tts/sse``
(events), ElevenLabs' ``POST /v1/text-to-speech/{voice_id}`` and ``.../stream`` (audio). Each is one
complete request on the one request path, streamed as it is made; a refusal before any audio is an HTTP
error in the protocol's shape, a failure after it cuts the body (bytes) or is an ``error`` event (SSE).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from server.agents import cartesia, elevenlabs, wire
from server.agents.cartesia_request import parse
from server.agents.elevenlabs_request import check_model, options, speed, text_of
from server.agents.formats import AudioOutput
from server.agents.socket import authorized
from server.agents.timing import word_timestamps
from server.core.errors import ServiceError
from server.core.events import AudioChunk, ChunkMarks, Event, EventQueue, StreamEnd, StreamFailed
from server.core.service import StreamRequest
from server.core.state import STATE, AppState

Refusal = Callable[[ServiceError], web.Response]
Writer = Callable[[web.StreamResponse, Event], Awaitable[None]]


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise ServiceError("bad_request", "the body must be a JSON object")
    return body


async def _serve(request: web.Request, state: AppState, wanted: StreamRequest, transport: str,
                 content_type: str, write: Writer, refuse: Refusal) -> web.StreamResponse:
    """Open the stream, answer its first event (a refusal as an HTTP error), then stream the rest."""
    service, events = state.service, EventQueue()
    await service.load_voice(wanted.voice)
    try:
        stream = service.open(wanted, transport, events)
    except ServiceError as error:  # counted by the service
        return refuse(error)
    task = service.start(stream)
    try:
        event = await events.next()
        if isinstance(event, StreamFailed):
            return refuse(event.error)
        response = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        while True:
            await write(response, event)
            if isinstance(event, StreamEnd | StreamFailed):
                await response.write_eof()
                return response
            event = await events.next()
    finally:
        if not task.done():  # the client went away: drop the queued chunks now
            stream.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _engine_rate(state: AppState) -> int:
    try:
        return state.runtime.engine.sample_rate
    except ServiceError:  # not ready: the stream's own open refuses the request (shutting_down)
        return 24_000


def _audio_writer(output: AudioOutput) -> Writer:
    async def write(response: web.StreamResponse, event: Event) -> None:
        if isinstance(event, AudioChunk):
            data = output.push(event.pcm)
        elif isinstance(event, StreamEnd):
            data = output.finish()
        elif isinstance(event, StreamFailed):
            raise ConnectionAbortedError(f"synthesis failed mid-stream: {event.error.code}")
        else:
            return
        if data:
            await response.write(data)

    return write


async def cartesia_bytes(request: web.Request) -> web.StreamResponse:
    return await _cartesia(request, sse=False)


async def cartesia_sse(request: web.Request) -> web.StreamResponse:
    return await _cartesia(request, sse=True)


async def _cartesia(request: web.Request, sse: bool) -> web.StreamResponse:
    state = request.app[STATE]
    if not authorized(request, state.settings.api_key, cartesia.KEY_HEADERS, cartesia.KEY_PARAMS):
        return wire.cartesia_http_error(ServiceError("unauthorized", "missing or wrong API key"))
    try:
        parsed = parse(await _body(request), state.settings.model)
    except ServiceError as error:
        state.service.refused(cartesia.TRANSPORT, error, route=request.path)
        return wire.cartesia_http_error(error)
    wanted = StreamRequest(id=f"cartesia-{uuid.uuid4().hex[:12]}", text=parsed.transcript,
                                   voice=parsed.voice, synthesis={"speed": parsed.speed}, lang=parsed.lang,
                                   marks=sse and parsed.add_timestamps)
    rate = _engine_rate(state)
    output = AudioOutput(parsed.output, rate)
    if not sse:
        return await _serve(request, state, wanted, cartesia.TRANSPORT, parsed.output.content_type,
                            _audio_writer(output), wire.cartesia_http_error)
    context_id = parsed.context_id

    async def write(response: web.StreamResponse, event: Event) -> None:
        messages: list[dict[str, Any]] = []
        if isinstance(event, ChunkMarks):
            stamps = word_timestamps(event, rate, parsed.normalized_timestamps)
            messages = [wire.cartesia_timestamps(context_id, stamps)] if stamps["words"] else []
        elif isinstance(event, AudioChunk | StreamEnd):
            audio = output.push(event.pcm) if isinstance(event, AudioChunk) else output.finish()
            messages = [wire.cartesia_chunk(context_id, audio)] if audio else []
            if isinstance(event, StreamEnd):
                messages.append(wire.cartesia_done(context_id))
        else:
            messages = [wire.cartesia_error(event.error, context_id)]
        for message in messages:
            await response.write(b"event: " + message["type"].encode() + b"\ndata: " + orjson.dumps(message)
                                 + b"\n\n")

    return await _serve(request, state, wanted, cartesia.TRANSPORT, "text/event-stream", write,
                        wire.cartesia_http_error)


async def elevenlabs_speech(request: web.Request) -> web.StreamResponse:
    """``POST /v1/text-to-speech/{voice_id}`` and ``.../stream``: the audio, streamed as it is made."""
    state = request.app[STATE]
    if not authorized(request, state.settings.api_key, elevenlabs.KEY_HEADERS, elevenlabs.KEY_PARAMS):
        return wire.elevenlabs_http_error(ServiceError("unauthorized", "missing or wrong API key (xi-api-key)"))
    try:
        body = await _body(request)
        opts = options(request.query, state.settings.model)
        check_model(body.get("model_id"), state.settings.model)
        text = text_of(body)
        if not text or not text.strip():
            raise ServiceError("bad_request", "text must be a non-empty string", param="text")
        normalize = opts.normalize and body.get("apply_text_normalization", "auto") != "off"
        language = body.get("language_code")
        lang = language.split("-")[0].lower() if isinstance(language, str) and language else opts.lang
        synthesis: dict[str, float | int] = {"speed": speed(body)}
        if isinstance(body.get("seed"), int) and not isinstance(body.get("seed"), bool):
            synthesis["seed"] = body["seed"]
    except ServiceError as error:
        state.service.refused(elevenlabs.TRANSPORT, error, route=request.path)
        return wire.elevenlabs_http_error(error)
    wanted = StreamRequest(id=f"elevenlabs-{uuid.uuid4().hex[:12]}", text=text,
                                   voice=request.match_info["voice_id"], synthesis=synthesis,
                                   normalize=normalize, lang=lang)
    return await _serve(request, state, wanted, elevenlabs.TRANSPORT, opts.output.content_type,
                        _audio_writer(AudioOutput(opts.output, _engine_rate(state))), wire.elevenlabs_http_error)
