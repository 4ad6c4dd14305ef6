"""OpenAI-compatible speech API: ``POST /v1/audio/speech`` and ``GET /v1/models``.

Same engine, batcher, voices, auth and metrics as the WebSocket API (``transport="http"``): HTTP and
WebSocket requests share model batches. See docs/http-api.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from engine import EngineError, SynthesisItem
from engine.synthesis import NFE_RANGE, SPEED_RANGE
from server.core.sinks import AudioEvent, EndEvent, ErrorEvent, EventSink
from server.core.state import STATE, AppState
from server.core.stream import Stream, StreamParams
from server.core.textfeed import TextFeed
from server.http.encoders import CONTENT_TYPES, make_encoder
from server.http.errors import error_response

routes = web.RouteTableDef()
MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
FIELDS = {"model", "input", "voice", "response_format", "speed", "stream_format", "instructions", "seed",
          "nfe_steps"}
# Where an error happens before any audio was sent, it becomes an HTTP status.
STATUS = {"bad_request": 400, "unknown_voice": 400, "text_too_long": 413, "queue_full": 429, "timeout": 503,
          "shutting_down": 503, "internal": 500}


OUTCOMES = {"voice_not_found": "unknown_voice", "input_too_long": "text_too_long", "shutting_down": "shutting_down"}


class RequestError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


@dataclass(frozen=True)
class SpeechRequest:
    model: str
    input: str
    voice: str
    response_format: str
    speed: float
    stream_format: str
    seed: int
    nfe_steps: int | None


def model_ids(state: AppState) -> list[str]:
    return [state.settings.model, *MODEL_ALIASES]


def _field(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if value is default:
        return value
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise RequestError(400, "invalid_type", f"'{name}' has the wrong type", name)
    return value


def parse_speech(body: Any, state: AppState) -> SpeechRequest:
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_request", "the body must be a JSON object")
    unknown = set(body) - FIELDS
    if unknown:
        raise RequestError(400, "unknown_parameter", f"unknown parameter(s): {', '.join(sorted(unknown))}",
                           sorted(unknown)[0])
    model = _field(body, "model", (str,), None)
    if model is None or model not in model_ids(state):
        raise RequestError(400, "model_not_found", f"model must be one of {', '.join(model_ids(state))}", "model")
    text = _field(body, "input", (str,), None)
    if text is None or not text.strip():
        raise RequestError(400, "invalid_input", "'input' must be a non-empty string", "input")
    if len(text) > state.settings.max_text_chars:
        raise RequestError(413, "input_too_long", f"'input' is {len(text)} characters; the limit is "
                           f"{state.settings.max_text_chars}", "input")
    fmt = _field(body, "response_format", (str,), "mp3")
    if fmt not in CONTENT_TYPES:
        raise RequestError(400, "invalid_response_format", f"response_format must be one of "
                           f"{', '.join(CONTENT_TYPES)}", "response_format")
    speed = float(_field(body, "speed", (int, float), 1.0))
    if not (math.isfinite(speed) and SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]):
        raise RequestError(400, "invalid_speed", "speed must be between 0.25 and 4.0", "speed")
    stream_format = _field(body, "stream_format", (str,), "audio")
    if stream_format not in ("audio", "sse"):
        raise RequestError(400, "invalid_stream_format", "stream_format must be 'audio' or 'sse'", "stream_format")
    _field(body, "instructions", (str,), None)  # accepted for compatibility; F5-TTS takes its style from the voice
    seed = _field(body, "seed", (int,), None)
    if seed is not None and not 0 <= seed < 2**31:
        raise RequestError(400, "invalid_seed", "seed must be between 0 and 2^31-1", "seed")
    nfe = _field(body, "nfe_steps", (int,), None)
    if nfe is not None and not NFE_RANGE[0] <= nfe <= NFE_RANGE[1]:
        raise RequestError(400, "invalid_nfe_steps", "nfe_steps must be between 1 and 128", "nfe_steps")
    voice = _field(body, "voice", (str,), "default")
    return SpeechRequest(model, text, voice, fmt, speed, stream_format,
                         seed if seed is not None else random.randrange(2**31), nfe)


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
    try:
        speech_request = parse_speech(body, state)
        stream = _open_stream(state, speech_request)
    except RequestError as exc:
        # Counted under the same outcome names as WebSocket requests, so dashboards need one legend.
        state.metrics.request_finished("http", OUTCOMES.get(exc.code, "bad_request"))
        return error_response(exc.status, exc.code, str(exc), param=exc.param)
    return await _respond(request, state, speech_request, stream)


def _open_stream(state: AppState, req: SpeechRequest) -> tuple[Stream, EventSink]:
    if state.shutting_down:
        raise RequestError(503, "shutting_down", "the server is shutting down")
    engine, batcher, voices = state.serving()
    voice = voices.get(req.voice)
    if voice is None:
        raise RequestError(400, "voice_not_found", f"no voice {req.voice!r}; see GET /v1/voices", "voice")
    nfe = req.nfe_steps or state.settings.default_nfe_steps
    try:
        engine.validate(SynthesisItem(req.input, voice, req.speed, nfe, seed=req.seed))
    except EngineError as exc:
        raise RequestError(400, "invalid_input", str(exc), "input") from None
    sink = EventSink()
    params = StreamParams(voice, req.speed, nfe, 2.0, -1.0, req.seed)
    feed = TextFeed.complete(req.input, engine.chunk_limit(voice, req.speed))
    stream = Stream(f"http-{id(sink):x}", 1, params, feed, engine, batcher, sink, state.metrics,
                    transport="http", retry_until_s=state.settings.queue_timeout_s)
    return stream, sink


async def _respond(request: web.Request, state: AppState, req: SpeechRequest,
                   opened: tuple[Stream, EventSink]) -> web.StreamResponse:
    stream, sink = opened
    task = asyncio.create_task(stream.run())
    state.active_streams += 1
    state.metrics.inflight.labels("http").inc()
    try:
        first = await sink.next()
        if isinstance(first, ErrorEvent):  # nothing sent yet: a proper HTTP status
            headers = {"Retry-After": str(max(1, math.ceil((first.retry_after_ms or 1000) / 1000)))} \
                if first.code in ("queue_full", "timeout", "shutting_down") else None
            return error_response(STATUS.get(first.code, 500), first.code, first.message, headers=headers)
        sse = req.stream_format == "sse"
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream" if sse else CONTENT_TYPES[req.response_format],
            "Cache-Control": "no-cache", "X-Seed": str(req.seed)})
        response.enable_chunked_encoding()
        await response.prepare(request)
        encoder = make_encoder(req.response_format, stream.engine.sample_rate)
        event: AudioEvent | EndEvent | ErrorEvent = first
        while True:
            if isinstance(event, AudioEvent):
                await _write(response, encoder.encode(event.pcm), sse)
            elif isinstance(event, EndEvent):
                await _write(response, encoder.finish(), sse)
                if sse:
                    await response.write(b"data: " + orjson.dumps({"type": "speech.audio.done", "usage": {
                        "input_tokens": len(req.input), "output_tokens": event.info["samples"],
                        "total_tokens": len(req.input) + event.info["samples"]}}) + b"\n\n")
                await response.write_eof()
                return response
            else:  # after audio went out a status can no longer change: say so in SSE, cut the body otherwise
                if sse:
                    await response.write(b"data: " + orjson.dumps({"type": "error", "error": {
                        "code": event.code, "message": event.message}}) + b"\n\n")
                    await response.write_eof()
                    return response
                raise ConnectionAbortedError(f"synthesis failed mid-stream: {event.code}")
            event = await sink.next()
    finally:
        if not task.done():  # client went away (handler cancelled) or we stopped: drop queued chunks now
            stream.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        state.active_streams -= 1
        state.metrics.inflight.labels("http").dec()


async def _write(response: web.StreamResponse, data: bytes, sse: bool) -> None:
    if not data:
        return
    if sse:
        data = b"data: " + orjson.dumps({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}) \
            + b"\n\n"
    await response.write(data)
