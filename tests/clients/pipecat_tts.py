"""Pipecat's Cartesia or ElevenLabs WebSocket service against this server, in a minimal pipeline driven the way
pipecat's own tests drive a processor (pipecat.tests.utils: a worker, a source and a sink): one LLM reply fed
as text tokens, a second reply interrupted once its audio has started, a third reply after the interruption.
Reports, per reply, the audio and timed words the sink saw, and how much audio of the interrupted reply
still arrived after the interruption."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from common import base_url, report
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection
from pipecat.tests.utils import QueuedFrameProcessor
from pipecat.workers.runner import WorkerRunner

RATE = 24000
FIRST = ("Hello there, ", "this is the first ", "sentence. ", "And the second ", "one.")
LONG = ("A long reply that will not be heard to its end, ", "because the user starts talking. ") * 3
AFTER = ("After the interruption. ",)


def make_service(plugin: str) -> Any:
    # The server's tiny model on two cores can pause between chunks longer than pipecat's 3 s default.
    options: dict[str, Any] = {"api_key": "secret", "sample_rate": RATE, "stop_frame_timeout_s": 30.0}
    if plugin == "cartesia":
        from pipecat.services.cartesia.tts import CartesiaTTSService

        url = base_url().replace("http", "ws", 1) + "/tts/websocket"
        return CartesiaTTSService(url=url, settings=CartesiaTTSService.Settings(voice="en", model="sonic-3"),
                                  **options)
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

    return ElevenLabsTTSService(url=base_url().replace("http", "ws", 1), settings=ElevenLabsTTSService.Settings(
        voice="en", model="eleven_flash_v2_5"), **options)


class Collector:
    """What the sink saw, per TTS context, in arrival order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Frame] = asyncio.Queue()
        self.audio: dict[str, list[tuple[float, int]]] = {}
        self.words: dict[str, list[tuple[str, float]]] = {}
        self.order: list[str] = []
        self.interrupted_at = float("inf")  # when the interruption reached the sink, through the service

    async def drain(self) -> None:
        while True:
            frame = await self.queue.get()
            if isinstance(frame, InterruptionFrame):
                self.interrupted_at = time.monotonic()
            context = getattr(frame, "context_id", None) or ""
            if context and context not in self.order and isinstance(frame, TTSAudioRawFrame | TTSTextFrame):
                self.order.append(context)
            if isinstance(frame, TTSAudioRawFrame):
                self.audio.setdefault(context, []).append((time.monotonic(), len(frame.audio) // 2))
            elif isinstance(frame, TTSTextFrame):
                self.words.setdefault(context, []).append((frame.text, (frame.pts or 0) / 1e9))

    async def wait_audio(self, count: int, timeout: float) -> None:
        """Wait until `count` contexts have audio."""
        deadline = time.monotonic() + timeout
        while len([c for c in self.order if c in self.audio]) < count:
            assert time.monotonic() < deadline, "no audio"
            await asyncio.sleep(0.02)


async def say(worker: PipelineWorker, pieces: tuple[str, ...]) -> None:
    await worker.queue_frame(LLMFullResponseStartFrame())
    for piece in pieces:
        await worker.queue_frame(LLMTextFrame(piece))
        await asyncio.sleep(0.05)  # tokens arrive over time, as from an LLM
    await worker.queue_frame(LLMFullResponseEndFrame())


async def settle(collector: Collector, context_count: int, quiet: float = 1.5, timeout: float = 120) -> None:
    """Wait for `context_count` contexts with audio, then for the audio to go quiet."""
    await collector.wait_audio(context_count, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = max(t for frames in collector.audio.values() for t, _ in frames)
        if time.monotonic() - last > quiet:
            return
        await asyncio.sleep(0.1)


async def drive(worker: PipelineWorker, collector: Collector, started: asyncio.Event) -> None:
    await asyncio.wait_for(started.wait(), 30)
    await say(worker, FIRST)
    await settle(collector, 1)
    await say(worker, LONG)
    await collector.wait_audio(2, 120)
    await worker.queue_frame(InterruptionFrame())
    await asyncio.sleep(1.0)
    await say(worker, AFTER)
    await settle(collector, 3)
    await worker.queue_frame(EndFrame())


async def main(plugin: str) -> None:
    collector = Collector()
    sink = QueuedFrameProcessor(queue=collector.queue, queue_direction=FrameDirection.DOWNSTREAM)
    worker = PipelineWorker(Pipeline([make_service(plugin), sink]), cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_worker: PipelineWorker, _frame: Frame) -> None:
        started.set()

    runner = WorkerRunner()
    await runner.add_workers(worker)
    draining = asyncio.create_task(collector.drain())
    await asyncio.wait_for(asyncio.gather(runner.run(), drive(worker, collector, started)), 300)
    draining.cancel()
    first, cut, after = [*collector.order, "", "", ""][:3]
    late = sum(n for t, n in collector.audio.get(cut, []) if t > collector.interrupted_at)
    report(first_samples=sum(n for _, n in collector.audio.get(first, [])),
           first_words=collector.words.get(first, []), cut_samples=sum(n for _, n in collector.audio.get(cut, [])),
           cut_late_samples=late, after_samples=sum(n for _, n in collector.audio.get(after, [])),
           after_words=collector.words.get(after, []), contexts=len(collector.order), sample_rate=RATE)


asyncio.run(main(sys.argv[2]))
