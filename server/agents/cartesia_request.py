"""Cartesia's request fields (WebSocket messages and the ``/tts/bytes`` and ``/tts/sse`` bodies) parsed into
the service's terms. Voice ids are this server's voice ids (or aliases); Cartesia's model names are
accepted as names of the one served model."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from server.agents.formats import AudioFormat, FormatError
from server.core.errors import ServiceError
from server.core.service import StreamRequest

MODELS = ("sonic-3", "sonic-2", "sonic-turbo", "sonic", "sonic-latest", "sonic-english", "sonic-multilingual")
"""Cartesia model names accepted (with dated snapshots, e.g. ``sonic-2-2025-03-07``), plus the served model."""
SPEEDS = {"slowest": 0.7, "slow": 0.85, "normal": 1.0, "fast": 1.15, "fastest": 1.3}
"""Cartesia's named speeds as speed factors."""
DEFAULT_BUFFER_DELAY_MS = 3000
"""Cartesia's documented default for ``max_buffer_delay_ms``."""
DEFAULT_FORMAT = {"container": "raw", "encoding": "pcm_f32le", "sample_rate": 44100}
"""What the Cartesia SDK asks for when it is given no format."""


@dataclass(frozen=True)
class CartesiaRequest:
    context_id: str
    transcript: str
    cont: bool
    """``continue``: more transcript follows for this context."""
    flush: bool
    voice: str
    output: AudioFormat
    lang: str
    speed: float
    add_timestamps: bool
    normalized_timestamps: bool
    buffer_delay_s: float

    def stream_request(self, final: bool) -> StreamRequest:
        """The stream of a new context: the whole transcript when complete; an incremental one opens empty and
        is fed through ``AgentContext.append`` (which paces it)."""
        return StreamRequest(id=self.context_id, text=self.transcript if final else "", voice=self.voice,
                             synthesis={"speed": self.speed}, final=final, lang=self.lang, marks=True)


def bad(message: str, param: str | None = None) -> ServiceError:
    return ServiceError("bad_request", message, param=param)


def parse(data: dict[str, Any], served_model: str) -> CartesiaRequest:
    """A generation request (raises ``ServiceError`` bad_request naming the field)."""
    transcript = data.get("transcript", "")
    if not isinstance(transcript, str):
        raise bad("transcript must be a string", "transcript")
    context_id = data.get("context_id") or uuid.uuid4().hex
    if not isinstance(context_id, str) or len(context_id) > 128:
        raise bad("context_id must be a string of at most 128 characters", "context_id")
    _check_model(data.get("model_id"), served_model)
    delay = data.get("max_buffer_delay_ms", DEFAULT_BUFFER_DELAY_MS)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 5000:
        raise bad("max_buffer_delay_ms must be a number of milliseconds, 0-5000", "max_buffer_delay_ms")
    language = data.get("language") or "auto"
    if not isinstance(language, str):
        raise bad("language must be a language code", "language")
    return CartesiaRequest(
        context_id=context_id, transcript=transcript, cont=_flag(data, "continue"), flush=_flag(data, "flush"),
        voice=voice_id(data.get("voice")), output=output_format(data.get("output_format") or DEFAULT_FORMAT),
        lang=language.split("-")[0].lower() if language != "auto" else "auto", speed=speed(data),
        add_timestamps=_flag(data, "add_timestamps"),
        normalized_timestamps=_flag(data, "use_normalized_timestamps"), buffer_delay_s=delay / 1000)


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        raise bad(f"{name} must be true or false", name)
    return bool(value)


def _check_model(model: object, served_model: str) -> None:
    if model is None or model == served_model:
        return
    if not isinstance(model, str) or not any(model == m or model.startswith(f"{m}-20") for m in MODELS):
        raise bad(f"unknown model_id {model!r}; use {served_model} or one of {', '.join(MODELS)}", "model_id")


def voice_id(voice: object) -> str:
    """``"id"``, ``{"id": ...}`` or ``{"mode": "id", "id": ...}``; embeddings are refused."""
    if isinstance(voice, dict):
        if voice.get("mode", "id") != "id":
            raise bad("only voices by id are supported ({\"mode\": \"id\", \"id\": ...})", "voice")
        voice = voice.get("id")
    if not isinstance(voice, str) or not voice:
        raise bad("voice must be a voice id or {\"mode\": \"id\", \"id\": voice id}", "voice")
    return voice


def output_format(spec: object) -> AudioFormat:
    if not isinstance(spec, dict):
        raise bad("output_format must be an object {container, encoding, sample_rate}", "output_format")
    container = spec.get("container", "raw")
    rate = spec.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise bad("output_format.sample_rate must be an integer (Hz)", "output_format")
    try:
        if container == "mp3":
            return AudioFormat("mp3", "mp3", rate, spec.get("bit_rate") or 128_000)
        if container not in ("raw", "wav"):
            raise FormatError(f"container {container!r} is not offered; use raw, wav or mp3")
        return AudioFormat(container, str(spec.get("encoding", "pcm_s16le")), rate)
    except FormatError as exc:
        raise bad(str(exc), "output_format") from None


def speed(data: dict[str, Any]) -> float:
    """``generation_config.speed`` (a factor), else the named or numeric ``speed`` (or the experimental
    voice control), else 1."""
    config = data.get("generation_config")
    value: object = config.get("speed") if isinstance(config, dict) and "speed" in config else data.get("speed")
    voice = data.get("voice")
    if value is None and isinstance(voice, dict):
        value = (voice.get("__experimental_controls") or {}).get("speed")
    if value is None:
        return 1.0
    if isinstance(value, str):
        if value not in SPEEDS:
            raise bad(f"speed must be one of {', '.join(SPEEDS)} or a number", "speed")
        return SPEEDS[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad("speed must be a name or a number", "speed")
    # Cartesia's older numeric speed runs -1 (slowest) .. 1 (fastest) around 0; a factor is positive.
    return float(value) if value > 0 and config is not None else 1.0 + 0.3 * max(-1.0, min(1.0, float(value)))
