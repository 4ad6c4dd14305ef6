"""RunPod job input and output items (the worker's wire format).

Job input::

    {"text": "...", "voice": "default" | {"audio_b64": "...", "transcript": "..."},
     "speed": 1.0, "nfe_steps": 32, "seed": 7, "format": "pcm" | "wav",
     "cfg_strength": 2.0, "sway_sampling_coef": -1.0, "normalize": true, "lang": "auto"}

Streamed output items: ``{"seq", "audio_b64", "format", "sample_rate"}`` per audio frame (``pcm``: raw
s16le mono; ``wav``: each frame a complete WAV file), then ``{"done": true, "samples", "chunks",
"ttfa_ms", "latency_ms", "rtf", "seed", "sample_rate"}``. A failure is one ``{"error": "code: message"}``.
Types are checked here; ranges once for every front end, by the service.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

from server.core.events import AudioChunk

INPUT_FIELDS = {"text", "voice", "speed", "nfe_steps", "seed", "format", "cfg_strength", "sway_sampling_coef",
                "normalize", "lang"}


class InputError(ValueError):
    pass


@dataclass(frozen=True)
class JobRequest:
    text: str
    voice: str | tuple[bytes, str]
    speed: float = 1.0
    nfe_steps: int | None = None
    seed: int | None = None
    format: str = "pcm"
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
    normalize: bool = True
    lang: str = "auto"


def _number(data: Mapping[str, Any], name: str, kind: type, default: Any) -> Any:
    """Type check only: ranges are the service's (engine.params), the same for every front end."""
    value = data.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise InputError(f"input.{name} must be a{'n integer' if kind is int else ' number'}")
    return kind(value)


def parse_job_input(data: Any, max_text_chars: int) -> JobRequest:
    """Validate a job's ``input``; every problem is an ``InputError`` with a message for the caller."""
    if not isinstance(data, dict):
        raise InputError("job input must be a JSON object")
    unknown = set(data) - INPUT_FIELDS
    if unknown:
        raise InputError(f"unknown input field(s): {', '.join(sorted(unknown))}")
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InputError("input.text must be a non-empty string")
    if len(text) > max_text_chars:
        raise InputError(f"input.text is {len(text)} characters; the limit is {max_text_chars}")
    voice: str | tuple[bytes, str] = data.get("voice", "default")
    if isinstance(voice, dict):
        try:
            audio = base64.b64decode(voice["audio_b64"], validate=True)
            transcript = voice["transcript"]
        except (KeyError, TypeError, binascii.Error) as exc:
            raise InputError("input.voice as an object needs audio_b64 (base64 audio) and transcript") from exc
        if not isinstance(transcript, str):
            raise InputError("input.voice.transcript must be a string")
        voice = (audio, transcript)
    elif not isinstance(voice, str):
        raise InputError("input.voice must be a voice id or {audio_b64, transcript}")
    fmt = data.get("format", "pcm")
    if fmt not in ("pcm", "wav"):
        raise InputError("input.format must be 'pcm' or 'wav'")
    normalize, lang = data.get("normalize", True), data.get("lang", "auto")
    if not isinstance(normalize, bool) or not isinstance(lang, str):
        raise InputError("input.normalize must be true or false, input.lang a language code")
    return JobRequest(
        text=text, voice=voice, format=fmt, seed=_number(data, "seed", int, None),
        speed=_number(data, "speed", float, 1.0), nfe_steps=_number(data, "nfe_steps", int, None),
        cfg_strength=_number(data, "cfg_strength", float, 2.0),
        sway_sampling_coef=_number(data, "sway_sampling_coef", float, -1.0), normalize=normalize, lang=lang,
    )


def output_item(event: AudioChunk, fmt: str, sample_rate: int) -> dict[str, Any]:
    pcm = event.pcm
    if fmt == "wav":  # each streamed piece a complete, playable file
        buffer = io.BytesIO()
        sf.write(buffer, np.frombuffer(pcm, dtype="<i2"), sample_rate, format="WAV", subtype="PCM_16")
        pcm = buffer.getvalue()
    return {"seq": event.seq, "audio_b64": base64.b64encode(pcm).decode(), "format": fmt, "sample_rate": sample_rate}
