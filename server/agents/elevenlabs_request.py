"""ElevenLabs' request fields (WebSocket query and messages, HTTP query and body) in the service's terms.
Voice ids are this server's voice ids (or aliases); ElevenLabs' model ids name the one served model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from server.agents.formats import AudioFormat, FormatError
from server.core.errors import ServiceError

MODELS = ("eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_multilingual_v2", "eleven_v3", "eleven_flash_v2",
          "eleven_turbo_v2", "eleven_monolingual_v1", "eleven_multilingual_v1")
"""ElevenLabs model ids accepted (any other ``eleven_*`` id too), plus the served model."""
DEFAULT_FORMAT = "mp3_44100_128"
_FORMAT = re.compile(r"(?P<codec>pcm|ulaw|alaw|mp3|opus)_(?P<rate>\d+)(?:_(?P<kbps>\d+))?")


@dataclass(frozen=True)
class Options:
    """What the URL says for every context of a socket (or for one HTTP request)."""

    output: AudioFormat
    normalize: bool
    lang: str
    auto_mode: bool
    inactivity_timeout_s: float


def bad(message: str, param: str | None = None) -> ServiceError:
    return ServiceError("bad_request", message, param=param)


def options(query: Any, served_model: str, default_timeout_s: float = 20.0) -> Options:
    check_model(query.get("model_id"), served_model)
    timeout = query.get("inactivity_timeout")
    if timeout is not None and (not timeout.isdigit() or not 1 <= int(timeout) <= 180):
        raise bad("inactivity_timeout must be 1-180 seconds", "inactivity_timeout")
    language = query.get("language_code") or "auto"
    return Options(output=output_format(query.get("output_format") or DEFAULT_FORMAT),
                   normalize=query.get("apply_text_normalization", "auto") != "off",
                   lang=language.split("-")[0].lower(), auto_mode=query.get("auto_mode") == "true",
                   inactivity_timeout_s=float(timeout) if timeout else default_timeout_s)


def check_model(model: object, served_model: str) -> None:
    if model is None or model == served_model:
        return
    if not isinstance(model, str) or not model.startswith("eleven_"):
        raise bad(f"unknown model_id {model!r}; use {served_model} or one of {', '.join(MODELS)}", "model_id")


def output_format(name: str) -> AudioFormat:
    """``pcm_24000``, ``ulaw_8000``, ``alaw_8000``, ``mp3_44100_128``, ``opus_48000_64``..."""
    match = _FORMAT.fullmatch(name)
    try:
        if match is None:
            raise FormatError(f"output_format {name!r} is not offered")
        codec, rate, kbps = match["codec"], int(match["rate"]), match["kbps"]
        bit_rate = int(kbps) * 1000 if kbps else None
        if codec == "pcm":
            return AudioFormat("raw", "pcm_s16le", rate)
        if codec in ("ulaw", "alaw"):
            if rate != 8000:
                raise FormatError(f"{codec} is offered at 8000 Hz")
            return AudioFormat("raw", f"pcm_{'mulaw' if codec == 'ulaw' else 'alaw'}", rate)
        if codec == "mp3":
            return AudioFormat("mp3", "mp3", rate, bit_rate or 128_000)
        return AudioFormat("ogg", "opus", rate, bit_rate)
    except FormatError as exc:
        raise bad(f"{exc}; use pcm_<rate>, ulaw_8000, alaw_8000, mp3_<rate>_<kbps> or opus_48000_<kbps>",
                  "output_format") from None


def speed(message: dict[str, Any]) -> float:
    settings = message.get("voice_settings")
    value = settings.get("speed") if isinstance(settings, dict) else None
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad("voice_settings.speed must be a number", "voice_settings")
    return float(value)


def text_of(message: dict[str, Any]) -> str | None:
    text = message.get("text")
    if text is not None and not isinstance(text, str):
        raise bad("text must be a string", "text")
    return text
