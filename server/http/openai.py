"""OpenAI-compatible speech API: ``POST /v1/audio/speech`` and ``GET /v1/models``.

Same engine, batcher, voices, auth and metrics as the WebSocket API (``transport="http"``): HTTP and
WebSocket requests share model batches. This module only parses OpenAI's request shape and writes
encoded audio (or SSE); the request path is ``server.core.service``. See docs/http-api.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from server.core.errors import ServiceError
from server.core.events import AudioChunk, ChunkMarks, EventQueue, StreamEnd
from server.core.service import StreamRequest
from server.core.state import STATE, AppState
from server.core.stream import Stream
from server.http.encoders import CONTENT_TYPES, make_encoder
from server.http.errors import error_response, service_error_response

routes = web.RouteTableDef()
MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
FIELDS = {"model", "input", "voice", "response_format", "speed", "stream_format", "instructions", "seed",
          "nfe_steps", "normalize", "lang", "marks"}


@dataclass(frozen=True)
class SpeechRequest:
    stream: StreamRequest
    response_format: str
    stream_format: str


def model_ids(state: AppState) -> list[str]:
    return [state.settings.model, *MODEL_ALIASES]


def _bad(detail: str, message: str, param: str | None = None) -> ServiceError:
    return ServiceError("bad_request", message, param=param, detail=detail)


def _field(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if value is default:
        return value
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise _bad("invalid_type", f"'{name}' has the wrong type", name)
    return value


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _bad("invalid_type", f"'{name}' must be true or false", name)
    return value


def parse_speech(body: Any, state: AppState) -> SpeechRequest:
    """OpenAI's request shape → a StreamRequest. Range checks are the service's (one table for all)."""
    if not isinstance(body, dict):
        raise _bad("invalid_request", "the body must be a JSON object")
    unknown = set(body) - FIELDS
    if unknown:
        raise _bad("unknown_parameter", f"unknown parameter(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
    model = _field(body, "model", (str,), None)
    if model is None or model not in model_ids(state):
        raise _bad("model_not_found", f"model must be one of {', '.join(model_ids(state))}", "model")
    text = _field(body, "input", (str,), None)
    if text is None or not text.strip():
        raise _bad("invalid_input", "'input' must be a non-empty string", "input")
    if len(text) > state.settings.max_text_chars:
        raise ServiceError("text_too_long", f"'input' is {len(text)} characters; the limit is "
                           f"{state.settings.max_text_chars}", param="input", detail="input_too_long")
    fmt = _field(body, "response_format", (str,), "mp3")
    if fmt not in CONTENT_TYPES:
        raise _bad("invalid_response_format", f"response_format must be one of {', '.join(CONTENT_TYPES)}",
                   "response_format")
    stream_format = _field(body, "stream_format", (str,), "audio")
    if stream_format not in ("audio", "sse"):
        raise _bad("invalid_stream_format", "stream_format must be 'audio' or 'sse'", "stream_format")
    _field(body, "instructions", (str,), None)  # accepted for compatibility; F5-TTS takes its style from the voice
    request = StreamRequest(
        id=f"http-{uuid.uuid4().hex[:12]}", text=text, voice=_field(body, "voice", (str,), "default"),
        speed=float(_field(body, "speed", (int, float), 1.0)), seed=_field(body, "seed", (int,), None),
        nfe_steps=_field(body, "nfe_steps", (int,), None), normalize=_flag(body, "normalize", True),
        lang=_field(body, "lang", (str,), "auto"),
        marks=_flag(body, "marks", False) and stream_format == "sse")  # marks travel only as SSE events
    return SpeechRequest(request, fmt, stream_format)


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    created = int(time.time())
    return web.json_response({"object": "list", "data": [
        {"id": mid, "object": "model", "created": created, "owned_by": "f5tts-server"} for mid in model_ids(state)]})


@routes.post("/v1/audio/speech")
async def speech(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error_response(400, "invalid_json", "the body is not valid JSON")
    events = EventQueue()
    try:
        parsed = parse_speech(body, state)
    except ServiceError as error:
        state.service.refused("http", error)
        return service_error_response(error)
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
            "Cache-Control": "no-cache", "X-Seed": str(stream.params.seed)})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await _stream_body(response, parsed, stream, events, first)
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
