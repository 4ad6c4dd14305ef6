"""OpenAI-compatible speech API: ``POST /v1/audio/speech`` and ``GET /v1/models``.

Same engine, batcher, voices, auth and metrics as the WebSocket API (``transport="http"``): HTTP and
WebSocket requests share model batches. This module only parses OpenAI's request shape and writes
encoded audio (or SSE); the request path is ``server.core.service``. See docs/http-api.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from typing import Any

import orjson
from aiohttp import web

from server.core.errors import ServiceError
from server.core.events import AudioChunk, ChunkMarks, EventQueue, StreamEnd
from server.core.state import STATE, AppState
from server.core.stream import Stream
from server.http.encoders import CONTENT_TYPES, make_encoder
from server.http.errors import service_error_response
from server.http.speech_request import SpeechRequest, bad_request, header_list, parse_speech

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
@routes.post("/v1/audio/speech")
async def speech(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        parsed = parse_speech(orjson.loads(await request.read()), state)
    except (orjson.JSONDecodeError, ServiceError) as exc:
        error = exc if isinstance(exc, ServiceError) else bad_request("invalid_json", "the body is not valid JSON")
        state.service.refused("http", error.for_request(f"http-{uuid.uuid4().hex[:12]}"), route=request.path)
        return service_error_response(error)
    events = EventQueue()
    await state.service.load_voice(parsed.stream.voice)
    try:
        stream = state.service.open(parsed.stream, "http", events)
    except ServiceError as error:  # counted by the service
        return service_error_response(error)
    return await _respond(request, state, parsed, stream, events)


async def _respond(request: web.Request, state: AppState, parsed: SpeechRequest, stream: Stream,
                   events: EventQueue) -> web.StreamResponse:
    task = state.service.start(stream)
    try:
        first = await events.next()
        if not isinstance(first, AudioChunk | ChunkMarks | StreamEnd):  # nothing sent yet: a proper HTTP status
            return service_error_response(first.error)
        sse = parsed.stream_format == "sse"
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream" if sse else CONTENT_TYPES[parsed.response_format],
            "Cache-Control": "no-cache", "X-Seed": str(stream.params.seed),
            **({"X-Ignored-Params": header_list(parsed.ignored)} if parsed.ignored else {})})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await _stream_body(response, parsed, stream, events, first)
        except ConnectionResetError:  # the client left between two writes, before the handler was cancelled
            log.info("client went away", extra={"request_id": stream.id})
        return response
    finally:
        if not task.done():  # client went away (handler cancelled) or we stopped: drop queued chunks now
            stream.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _stream_body(response: web.StreamResponse, parsed: SpeechRequest, stream: Stream,
                       events: EventQueue, event: Any) -> None:
    sse = parsed.stream_format == "sse"
    encoder = make_encoder(parsed.response_format, stream.engine.sample_rate)
    while True:
        if isinstance(event, AudioChunk):
            await _write(response, encoder.encode(event.pcm), sse)
        elif isinstance(event, ChunkMarks):  # only requested with SSE
            await response.write(b"data: " + orjson.dumps({"type": "speech.marks", **event.to_json()}) + b"\n\n")
        elif isinstance(event, StreamEnd):
            await _write(response, encoder.finish(), sse)
            if sse:
                tokens = len(parsed.stream.text)
                await response.write(b"data: " + orjson.dumps({"type": "speech.audio.done", "usage": {
                    "input_tokens": tokens, "output_tokens": event.samples,
                    "total_tokens": tokens + event.samples}}) + b"\n\n")
            await response.write_eof()
            return
        else:  # after audio went out a status can no longer change: say so in SSE, cut the body otherwise
            if not sse:
                raise ConnectionAbortedError(f"synthesis failed mid-stream: {event.error.code}")
            await response.write(b"data: " + orjson.dumps({"type": "error", "error": {
                "code": event.error.code, "message": event.error.message}}) + b"\n\n")
            await response.write_eof()
            return
        event = await events.next()


async def _write(response: web.StreamResponse, data: bytes, sse: bool) -> None:
    if not data:
        return
    if sse:
        data = b"data: " + orjson.dumps({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}) \
            + b"\n\n"
    await response.write(data)
