"""``python -m server.runpod_worker``: the RunPod serverless front end.

The model is loaded and warmed *before* ``runpod.serverless.start`` (lazy loading made every cold start
10-30 s). Jobs stream audio through the same engine, batcher and ``Stream`` as the WebSocket API, and a
constant ``concurrency_modifier`` lets one worker take as many jobs at once as the batcher can batch.

Job input::

    {"text": "...", "voice": "default" | {"audio_b64": "...", "transcript": "..."},
     "speed": 1.0, "nfe_steps": 32, "seed": 7, "format": "pcm" | "wav",
     "cfg_strength": 2.0, "sway_sampling_coef": -1.0}

Streamed output items: ``{"seq", "audio_b64", "format", "sample_rate"}`` per audio frame (``pcm``: raw
s16le mono; ``wav``: each frame a complete WAV file), then ``{"done": true, "samples", "chunks",
"ttfa_ms", "latency_ms", "rtf", "seed", "sample_rate"}``. A failure is one ``{"error": "code: message"}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import logging
import os
import platform
import shutil
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

from engine import EngineError, Voice
from observability import Metrics
from observability.logs import configure_logging
from observability.startup import CLOCK
from server.core.boot import Runtime, prepare
from server.core.errors import ServiceError
from server.core.events import AudioChunk, EventQueue, StreamEnd, StreamFailed
from server.core.service import Service, StreamRequest
from server.core.settings import Settings, load_settings
from server.core.stream import Stream

log = logging.getLogger("server.runpod_worker")

INPUT_FIELDS = {"text", "voice", "speed", "nfe_steps", "seed", "format", "cfg_strength", "sway_sampling_coef",
                "normalize", "lang"}
INLINE_VOICE_CACHE = 32


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


class Worker:
    def __init__(self, settings: Settings, runtime: Runtime, metrics: Metrics) -> None:
        self.settings = settings
        self.engine = runtime.engine
        self.batcher = runtime.batcher
        self.metrics = metrics
        self.service = Service(settings, metrics)
        self.service.attach(runtime)
        self._started = False
        self._inline: OrderedDict[str, Voice] = OrderedDict()

    @property
    def concurrency(self) -> int:
        """Jobs taken at once: enough to fill a batch. Constant, so RunPod's autoscaler can reason about it."""
        return self.settings.max_batch_size

    @classmethod
    def boot(cls, settings: Settings) -> Worker:
        """Load and warm everything before the worker takes jobs. Raises EngineError on failure."""
        started = CLOCK.begin()  # the process's start when main() owns it
        metrics = Metrics(latency_budget_s=settings.latency_budget_s)
        ready = asyncio.run(prepare(settings, metrics))
        metrics.ready.set(1)
        log.info("worker ready", extra={"startup_seconds": round(time.perf_counter() - started, 3),
                                        "concurrency": settings.max_batch_size})
        return cls(settings, ready, metrics)

    async def _voice(self, request: JobRequest) -> str | Voice:
        """A voice id (looked up by the service), or an inline voice prepared here once and cached."""
        if isinstance(request.voice, str):
            return request.voice
        audio, transcript = request.voice
        key = hashlib.sha256(audio + transcript.encode()).hexdigest()
        if key not in self._inline:
            try:
                # Decoded off the model thread, with the same limits as uploads; only the mel runs on it.
                self._inline[key] = await self.service.runtime.voices.prepare(f"inline-{key[:12]}", audio,
                                                                              transcript)
            except EngineError as exc:
                raise ServiceError("bad_request", f"inline voice: {exc}") from exc
            while len(self._inline) > INLINE_VOICE_CACHE:
                self._inline.popitem(last=False)
        self._inline.move_to_end(key)
        return self._inline[key]

    async def stream(self, job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The RunPod handler: an async generator yielding audio as chunks finish."""
        if not self._started:  # the batcher's task lives in the SDK's event loop
            await self.batcher.start()
            self._started = True
        events = EventQueue()
        try:
            stream, fmt = await self._open(job, events)
        except ServiceError as error:
            yield {"error": f"{error.code}: {error}"}
            return
        task = self.service.start(stream)
        try:
            while True:
                event = await events.next()
                if isinstance(event, AudioChunk):
                    yield output_item(event, fmt, self.engine.sample_rate)
                elif isinstance(event, StreamEnd):
                    yield {"done": True, "seed": stream.params.seed, "sample_rate": self.engine.sample_rate,
                           **{k: v for k, v in event.figures().items() if k != "frames"}}
                    return
                elif isinstance(event, StreamFailed):  # (marks are never asked for here)
                    yield {"error": f"{event.error.code}: {event.error}"}
                    return
        finally:  # job cancelled (or the consumer went away): drop this job's queued chunks now
            if not task.done():
                stream.cancel()
                task.cancel()

    async def _open(self, job: dict[str, Any], events: EventQueue) -> tuple[Stream, str]:
        job_id = str(job.get("id", "job"))
        try:
            request = parse_job_input(job.get("input"), self.settings.max_text_chars)
            voice = await self._voice(request)
        except (InputError, ServiceError) as exc:
            error = exc.for_request(job_id) if isinstance(exc, ServiceError) \
                else ServiceError("bad_request", str(exc), job_id)
            self.service.refused("runpod", error)
            raise error from None
        stream = self.service.open(StreamRequest(
            id=job_id, text=request.text, voice=voice, speed=request.speed, nfe_steps=request.nfe_steps,
            cfg_strength=request.cfg_strength, sway_sampling_coef=request.sway_sampling_coef, seed=request.seed,
            normalize=request.normalize, lang=request.lang,
        ), "runpod", events)
        return stream, request.format

    async def aggregate(self, job: dict[str, Any]) -> Any:
        """The same job, collected into one result. The SDK's ``--test_input`` mode does not iterate a
        generator handler (its output would be the generator object), so local tests get this instead."""
        items = [item async for item in self.stream(job)]
        if items and "error" in items[-1]:
            return {"error": items[-1]["error"]}
        # The SDK truncates its own "Job result" log line at 4 KiB; say what the result holds.
        audio_bytes = sum(len(base64.b64decode(i["audio_b64"])) for i in items if "audio_b64" in i)
        log.info("job result", extra={"job_id": job.get("id"), "frames": len(items) - 1,
                                      "audio_bytes": audio_bytes, **items[-1]})
        return items


def local_test_mode(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Will the SDK run one job and exit (``--test_input`` / ``test_input.json``) rather than serve?"""
    if "--rp_serve_api" in argv:
        return False
    return any(a == "--test_input" or a.startswith("--test_input=") for a in argv) \
        or "RUNPOD_WEBHOOK_GET_JOB" not in environ


def log_diagnostics(settings: Settings) -> None:
    disk = shutil.disk_usage("/")
    log.info("worker starting", extra={
        "python": platform.python_version(), "executable": sys.executable, "model": settings.model,
        "device": settings.device, "disk_free_gb": round(disk.free / 1e9, 1), "pid": os.getpid(),
    })


def main() -> int:
    CLOCK.entered()  # imports end here; startup phases count from the process's start
    settings = load_settings([])  # TTS_* env only: the command line belongs to the runpod SDK
    configure_logging(settings.log_format, settings.log_level)
    log_diagnostics(settings)
    try:
        worker = Worker.boot(settings)
    except (EngineError, OSError) as exc:  # OSError: e.g. the voices dir cannot be created
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return 1
    import runpod

    handler = worker.aggregate if local_test_mode(sys.argv, os.environ) else worker.stream
    runpod.serverless.start({
        "handler": handler,
        "return_aggregate_stream": True,
        "concurrency_modifier": lambda _current: worker.concurrency,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
