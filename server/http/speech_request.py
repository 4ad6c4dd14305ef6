"""OpenAI's speech request shape, parsed into the service's ``StreamRequest``. Type and shape checks live
here; ranges, voices and speakability are the service's (one table for every front end)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any

from server.core.errors import ServiceError
from server.core.request import StreamRequest, parse, unknown_fields, wire_names
from server.core.state import AppState
from server.http.catalog import model_ids, resolve_model
from server.http.encoders import CONTENT_TYPES

log = logging.getLogger(__name__)

SPEECH = wire_names(rename={"text": "input"}, omit=("id", "final", "cfg_strength", "sway_sampling_coef"))
"""The request fields OpenAI's shape carries (server/core/request.py), ``text`` as ``input``."""
OWN = {"model", "response_format", "stream_format", "instructions"}
"""OpenAI's fields that are this front end's business, not the request's."""


@dataclass(frozen=True)
class SpeechRequest:
    stream: StreamRequest
    response_format: str
    stream_format: str
    ignored: tuple[str, ...] = ()
    """Unknown request fields that were ignored (named in the ``X-Ignored-Params`` header)."""


def bad_request(detail: str, message: str, param: str | None = None) -> ServiceError:
    return ServiceError("bad_request", message, param=param, detail=detail)


def _text(body: dict[str, Any], name: str, default: str = "") -> str:
    """One of OpenAI's own string fields (null counts as absent, as for every request field)."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise bad_request("invalid_type", f"'{name}' must be a string", name)
    return value


def parse_speech(body: Any, state: AppState) -> SpeechRequest:
    """OpenAI's request shape → a StreamRequest. Range checks are the service's (one table for all)."""
    if not isinstance(body, dict):
        raise bad_request("invalid_request", "the body must be a JSON object")
    ignored = _unknown_fields(body, state)
    model = _text(body, "model")
    if resolve_model(model, state) is None:
        raise bad_request("model_not_found", f"model must be one of {', '.join(model_ids(state))}", "model")
    text = _text(body, "input")
    if not text.strip():
        raise bad_request("invalid_input", "'input' must be a non-empty string", "input")
    fmt = _text(body, "response_format", "mp3")
    if fmt not in CONTENT_TYPES:
        raise bad_request("invalid_response_format", f"response_format must be one of {', '.join(CONTENT_TYPES)}",
                          "response_format")
    stream_format = _text(body, "stream_format", "audio")
    if stream_format not in ("audio", "sse"):
        raise bad_request("invalid_stream_format", "stream_format must be 'audio' or 'sse'", "stream_format")
    _text(body, "instructions")  # accepted for compatibility; F5-TTS takes its style from the voice
    request = parse(body, SPEECH, id=f"http-{uuid.uuid4().hex[:12]}", voice=_voice(body))
    if request.marks and stream_format != "sse":
        request = replace(request, marks=False)  # marks travel only as SSE events
    if ignored:
        log.debug("ignored unknown parameters", extra={"request_id": request.id, "params": list(ignored)})
    return SpeechRequest(request, fmt, stream_format, ignored)


def _unknown_fields(body: dict[str, Any], state: AppState) -> tuple[str, ...]:
    """Fields we do not know. Ignored by default, because clients add their own (Home Assistant's
    ``extra_payload``, e.g. ``lang_code``); ``--strict-params`` refuses them so typos do not pass silently."""
    unknown = tuple(unknown_fields(body, SPEECH, OWN))
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
