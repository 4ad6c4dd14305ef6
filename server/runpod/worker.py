"""The RunPod serverless worker: jobs stream audio through the same service, engine and batcher as the
WebSocket API. The model is loaded and warmed *before* the SDK starts taking jobs (lazy loading made every
cold start 10-30 s), and a constant ``concurrency_modifier`` lets one worker take as many jobs at once as
the batcher can batch. Entry point: ``python -m server.runpod_worker`` (server/runpod/main.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from engine import EngineError, Voice
from observability import Metrics
from observability.startup import CLOCK
from server.core.boot import Runtime, prepare
from server.core.errors import ServiceError
from server.core.events import AudioChunk, EventQueue, StreamEnd, StreamFailed
from server.core.service import Service
from server.core.settings import Settings
from server.core.stream import Stream
from server.runpod.jobs import JobRequest, output_item, parse_job_input
from text.errors import InvalidTextError

log = logging.getLogger("server.runpod_worker")

INLINE_VOICE_CACHE = 32


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
        # RunPod's queue is the admission here: it hands a worker at most ``concurrency`` jobs, and a job
        # refused at the door would fail rather than wait for this worker (or another) to take it.
        settings = settings.replace(admission=False)
        metrics = Metrics(latency_budget_s=settings.latency_budget_s)
        ready = asyncio.run(prepare(settings, metrics))
        metrics.ready.set(1)
        log.info("worker ready", extra={"startup_seconds": round(time.perf_counter() - started, 3),
                                        "concurrency": settings.max_batch_size})
        return cls(settings, ready, metrics)

    async def _voice(self, job: JobRequest) -> str | Voice:
        """A voice id (looked up by the service), or an inline voice prepared here once and cached."""
        if job.inline_voice is None:
            await self.service.load_voice(job.request.voice)  # created through another worker a moment ago
            return job.request.voice
        audio, transcript = job.inline_voice
        key = hashlib.sha256(audio + transcript.encode()).hexdigest()
        if key not in self._inline:
            try:
                # Decoded off the model thread, with the same limits as uploads; only the mel runs on it.
                self._inline[key] = await self.service.runtime.voices.prepare(f"inline-{key[:12]}", audio,
                                                                              transcript)
            except (EngineError, InvalidTextError) as exc:  # an empty transcript is the text's error
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
            parsed = parse_job_input(job.get("input"), job_id)
            voice = await self._voice(parsed)
        except ServiceError as exc:
            error = exc.for_request(job_id)
            self.service.refused("runpod", error)
            raise error from None
        stream = self.service.open(replace(parsed.request, voice=voice), "runpod", events)
        return stream, parsed.format

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
