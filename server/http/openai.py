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
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from server.core.errors import ServiceError
from server.core.events import AudioChunk, ChunkMarks, EventQueue, StreamEnd
from server.core.service import StreamRequest
from server.core.state import STATE, AppState
from server.core.stream import Stream
from server.http.catalog import model_ids, resolve_model
from server.http.encoders import CONTENT_TYPES, make_encoder
from server.http.errors import service_error_response

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
FIELDS = {"model", "input", "voice", "response_format", "speed", "stream_format", "instructions", "seed",
          "nfe_steps", "normalize", "lang", "marks"}


@dataclass(frozen=True)
class SpeechRequest:
    stream: StreamRequest
    response_format: str
    stream_format: str
    ignored: tuple[str, ...] = ()
    """Unknown request fields that were ignored (named in the ``X-Ignored-Params`` header)."""


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
    ignored = _unknown_fields(body, state)
    model = _field(body, "model", (str,), None)
    if model is None or resolve_model(model, state) is None:
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
        id=f"http-{uuid.uuid4().hex[:12]}", text=text, voice=_voice(body),
        speed=float(_field(body, "speed", (int, float), 1.0)), seed=_field(body, "seed", (int,), None),
        nfe_steps=_field(body, "nfe_steps", (int,), None), normalize=_flag(body, "normalize", True),
        lang=_field(body, "lang", (str,), "auto"),
        marks=_flag(body, "marks", False) and stream_format == "sse")  # marks travel only as SSE events
    if ignored:
        log.debug("ignored unknown parameters", extra={"request_id": request.id, "params": list(ignored)})
    return SpeechRequest(request, fmt, stream_format, ignored)


def _unknown_fields(body: dict[str, Any], state: AppState) -> tuple[str, ...]:
    """Fields we do not know. Ignored by default, because clients add their own (Home Assistant's
    ``extra_payload``, e.g. ``lang_code``); ``--strict-params`` refuses them so typos do not pass silently."""
    unknown = tuple(sorted(set(body) - FIELDS))
    if unknown and state.settings.strict_params:
        raise _bad("unknown_parameter", f"unknown parameter(s): {', '.join(unknown)}", unknown[0])
    return unknown


def _voice(body: dict[str, Any]) -> str:
    """A voice id or alias, as a string or as OpenAI's custom-voice object ``{"id": ...}``."""
    voice = body.get("voice", "default")
    if isinstance(voice, dict) and set(voice) == {"id"}:
        voice = voice["id"]
    if not isinstance(voice, str):
        raise _bad("invalid_type", "'voice' must be a voice id or {\"id\": voice id}", "voice")
    return voice


def _header_list(names: tuple[str, ...], most: int = 20) -> str:
    """Field names as a header value: escaped (a client's names may hold newlines or NULs) and bounded."""
    escaped = [name.encode("unicode_escape").decode("ascii")[:64] for name in names[:most]]
    return ", ".join(escaped) + (", ..." if len(names) > most else "")


@routes.post("/v1/audio/speech")
async def speech(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        parsed = parse_speech(orjson.loads(await request.read()), state)
    except (orjson.JSONDecodeError, ServiceError) as exc:
        error = exc if isinstance(exc, ServiceError) else _bad("invalid_json", "the body is not valid JSON")
        state.service.refused("http", error.for_request(f"http-{uuid.uuid4().hex[:12]}"), route=request.path)
        return service_error_response(error)
    events = EventQueue()
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
            **({"X-Ignored-Params": _header_list(parsed.ignored)} if parsed.ignored else {})})
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
