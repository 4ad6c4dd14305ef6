"""RunPod job input and output items (the worker's wire format).

Job input::

    {"text": "...", "voice": "default" | {"audio_b64": "...", "transcript": "..."}, "format": "pcm" | "wav",
     "speed": 1.0, "nfe_steps": 32, "seed": 7, ...}

with every request field of server/core/request.py except ``id``, ``final`` and ``marks``.

Streamed output items: ``{"seq", "audio_b64", "format", "sample_rate"}`` per audio frame (``pcm``: raw
s16le mono; ``wav``: each frame a complete WAV file), then ``{"done": true, "samples", "chunks",
"ttfa_ms", "latency_ms", "rtf", "seed", "sample_rate"}``. A failure is one ``{"error": "code: message"}``.
Types are checked by the request specification (server/core/request.py); ranges once for every front end,
by the service.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

from server.core.errors import ServiceError
from server.core.events import AudioChunk
from server.core.request import StreamRequest, parse, unknown_fields, wire_names

JOB_INPUT = wire_names(omit=("id", "final", "marks"))
"""The request fields a job's input carries, under their own names (server/core/request.py)."""
OWN = {"format"}


@dataclass(frozen=True)
class JobRequest:
    request: StreamRequest
    """With the voice as sent: an id, or ``inline_voice`` to prepare first."""
    inline_voice: tuple[bytes, str] | None = None
    """An inline voice: (audio, transcript)."""
    format: str = "pcm"


def _label(name: str) -> str:
    return f"input.{name}"


def parse_job_input(data: Any, job_id: str = "job") -> JobRequest:
    """Validate a job's ``input``; every problem is a ``ServiceError`` (bad_request) with a message for the
    caller. Limits (the text's length among them) are the service's, the same for every front end."""
    if not isinstance(data, dict):
        raise _refused("job input must be a JSON object")
    unknown = unknown_fields(data, JOB_INPUT, OWN)
    if unknown:
        raise _refused(f"unknown input field(s): {', '.join(unknown)}")
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _refused("input.text must be a non-empty string")
    voice = data.get("voice", "default")
    inline = None
    if isinstance(voice, dict):
        try:
            audio = base64.b64decode(voice["audio_b64"], validate=True)
            transcript = voice["transcript"]
        except (KeyError, TypeError, binascii.Error) as exc:
            raise _refused("input.voice as an object needs audio_b64 (base64 audio) and transcript") from exc
        if not isinstance(transcript, str):
            raise _refused("input.voice.transcript must be a string")
        voice, inline = "inline", (audio, transcript)
    elif not isinstance(voice, str):
        raise _refused("input.voice must be a voice id or {audio_b64, transcript}")
    fmt = data.get("format", "pcm")
    if fmt not in ("pcm", "wav"):
        raise _refused("input.format must be 'pcm' or 'wav'")
    request = parse(data, JOB_INPUT, label=_label, id=job_id, voice=voice)
    return JobRequest(request, inline, fmt)


def _refused(message: str) -> ServiceError:
    return ServiceError("bad_request", message)


def output_item(event: AudioChunk, fmt: str, sample_rate: int) -> dict[str, Any]:
    pcm = event.pcm
    if fmt == "wav":  # each streamed piece a complete, playable file
        buffer = io.BytesIO()
        sf.write(buffer, np.frombuffer(pcm, dtype="<i2"), sample_rate, format="WAV", subtype="PCM_16")
        pcm = buffer.getvalue()
    return {"seq": event.seq, "audio_b64": base64.b64encode(pcm).decode(), "format": fmt, "sample_rate": sample_rate}
