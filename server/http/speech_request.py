"""OpenAI's speech request shape, parsed into the service's ``StreamRequest``. Type and shape checks live
here; ranges, voices and speakability are the service's (one table for every front end)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from server.core.errors import ServiceError
from server.core.service import StreamRequest
from server.core.state import AppState
from server.http.catalog import model_ids, resolve_model
from server.http.encoders import CONTENT_TYPES

log = logging.getLogger(__name__)

FIELDS = {"model", "input", "voice", "response_format", "speed", "stream_format", "instructions", "seed",
          "nfe_steps", "normalize", "lang", "marks"}


@dataclass(frozen=True)
class SpeechRequest:
    stream: StreamRequest
    response_format: str
    stream_format: str
    ignored: tuple[str, ...] = ()
    """Unknown request fields that were ignored (named in the ``X-Ignored-Params`` header)."""


def bad_request(detail: str, message: str, param: str | None = None) -> ServiceError:
    return ServiceError("bad_request", message, param=param, detail=detail)


def _field(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if value is default:
        return value
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise bad_request("invalid_type", f"'{name}' has the wrong type", name)
    return value


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise bad_request("invalid_type", f"'{name}' must be true or false", name)
    return value


def parse_speech(body: Any, state: AppState) -> SpeechRequest:
    """OpenAI's request shape → a StreamRequest. Range checks are the service's (one table for all)."""
    if not isinstance(body, dict):
        raise bad_request("invalid_request", "the body must be a JSON object")
    ignored = _unknown_fields(body, state)
    model = _field(body, "model", (str,), None)
    if model is None or resolve_model(model, state) is None:
        raise bad_request("model_not_found", f"model must be one of {', '.join(model_ids(state))}", "model")
    text = _field(body, "input", (str,), None)
    if text is None or not text.strip():
        raise bad_request("invalid_input", "'input' must be a non-empty string", "input")
    if len(text) > state.settings.max_text_chars:
        raise ServiceError("text_too_long", f"'input' is {len(text)} characters; the limit is "
                           f"{state.settings.max_text_chars}", param="input", detail="input_too_long")
    fmt = _field(body, "response_format", (str,), "mp3")
    if fmt not in CONTENT_TYPES:
        raise bad_request("invalid_response_format", f"response_format must be one of {', '.join(CONTENT_TYPES)}",
                   "response_format")
    stream_format = _field(body, "stream_format", (str,), "audio")
    if stream_format not in ("audio", "sse"):
        raise bad_request("invalid_stream_format", "stream_format must be 'audio' or 'sse'", "stream_format")
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
        raise bad_request("unknown_parameter", f"unknown parameter(s): {', '.join(unknown)}", unknown[0])
    return unknown


def _voice(body: dict[str, Any]) -> str:
    """A voice id or alias, as a string or as OpenAI's custom-voice object ``{"id": ...}``."""
    voice = body.get("voice", "default")
    if isinstance(voice, dict) and set(voice) == {"id"}:
        voice = voice["id"]
    if not isinstance(voice, str):
        raise bad_request("invalid_type", "'voice' must be a voice id or {\"id\": voice id}", "voice")
    return voice


def header_list(names: tuple[str, ...], most: int = 20) -> str:
    """Field names as a header value: escaped (a client's names may hold newlines or NULs) and bounded."""
    escaped = [name.encode("unicode_escape").decode("ascii")[:64] for name in names[:most]]
    return ", ".join(escaped) + (", ..." if len(names) > most else "")
