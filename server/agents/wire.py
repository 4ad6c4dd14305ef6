"""The messages and error shapes of the two agent protocols, as their clients parse them.

Cartesia: every WebSocket message has ``type``, ``context_id``, ``status_code`` and ``done``; errors carry
``error_code``, ``title`` and ``message``. ElevenLabs: audio messages carry ``audio`` (base64), ``isFinal``,
``alignment`` and ``normalizedAlignment`` (``contextId`` on the multi-context socket); errors carry
``error`` (the code) and ``message``; HTTP errors are ``{"detail": {"status", "message"}}``. Codes are the
server's own (server/core/errors.py), so every refusal says the same thing on every front end.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson
from aiohttp import web

from server.core.errors import ServiceError

TRY_AGAIN_LATER = 1013
"""WebSocket close code: the server is overloaded or draining; reconnect later."""


def _b64(audio: bytes) -> str:
    return base64.b64encode(audio).decode()


def cartesia_chunk(context_id: str, audio: bytes) -> dict[str, Any]:
    return {"type": "chunk", "context_id": context_id, "status_code": 206, "done": False, "data": _b64(audio),
            "step_time": 0.0}


def cartesia_timestamps(context_id: str, stamps: dict[str, list[object]]) -> dict[str, Any]:
    return {"type": "timestamps", "context_id": context_id, "status_code": 206, "done": False,
            "word_timestamps": stamps}


def cartesia_flush_done(context_id: str, flush_id: int) -> dict[str, Any]:
    return {"type": "flush_done", "context_id": context_id, "status_code": 206, "done": False,
            "flush_done": True, "flush_id": flush_id}


def cartesia_done(context_id: str) -> dict[str, Any]:
    return {"type": "done", "context_id": context_id, "status_code": 200, "done": True}


def cartesia_error(error: ServiceError, context_id: str | None) -> dict[str, Any]:
    """``context_id`` null for an error about the socket rather than one context."""
    return {"type": "error", "context_id": context_id, "done": True, **_cartesia_body(error)}


def _cartesia_body(error: ServiceError) -> dict[str, Any]:
    body: dict[str, Any] = {"status_code": error.kind.status, "error_code": error.code, "code": error.code,
                            "title": error.code.replace("_", " ").capitalize(), "message": error.message}
    if error.retry_after_ms is not None:
        body["retry_after_ms"] = error.retry_after_ms
    return body


def cartesia_http_error(error: ServiceError) -> web.Response:
    """An HTTP refusal in Cartesia's error shape."""
    return _http_error(error, _cartesia_body(error))


def elevenlabs_audio(audio: bytes, alignment: dict[str, Any] | None, normalized: dict[str, Any] | None,
                     context_id: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"audio": _b64(audio), "isFinal": None, "alignment": alignment,
                               "normalizedAlignment": normalized}
    if context_id is not None:
        message["contextId"] = context_id
    return message


def elevenlabs_final(context_id: str | None) -> dict[str, Any]:
    return {"isFinal": True} if context_id is None else {"isFinal": True, "contextId": context_id}


def elevenlabs_error(error: ServiceError, context_id: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"error": error.code, "message": error.message, "status": error.kind.status}
    if context_id is not None:
        message["contextId"] = context_id
    return message


def elevenlabs_http_error(error: ServiceError) -> web.Response:
    """An HTTP refusal in ElevenLabs' shape, ``{"detail": {"status", "code", "message"}}``."""
    return _http_error(error, {"detail": {"status": error.code, "code": error.code, "message": error.message}})


def _http_error(error: ServiceError, body: dict[str, Any]) -> web.Response:
    headers = {}
    if error.kind.retryable:
        headers["Retry-After"] = str(max(1, math.ceil((error.retry_after_ms or 1000) / 1000)))
    if error.code == "unauthorized":
        headers["WWW-Authenticate"] = "Bearer"
    return web.json_response(body, status=error.kind.status, headers=headers, dumps=lambda v: orjson.dumps(v).decode())
