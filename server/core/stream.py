"""One synthesis stream: text chunks in, cross-faded PCM frames out, in order, as chunks finish.

Two cooperating tasks: the producer takes chunks from the text feed and submits them to the batcher,
at most one ahead of the chunk being streamed, and only once the previous chunk has started (so a
stream's own next chunk never competes with its first one for a batch); the consumer awaits results in
order and sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from batching import QueueFullError, Ticket
from engine import InvalidTextError, SynthesisItem, SynthesisParams, Voice
from observability import Metrics
from server.core.audio import CROSS_FADE_S, CrossFader, to_pcm16
from server.core.errors import classify
from server.core.events import AudioChunk, Event, Sink, StreamEnd, StreamFailed
from server.core.textfeed import TextFeed

if TYPE_CHECKING:
    from server.core.boot import Runtime

log = logging.getLogger(__name__)

FRAME_SAMPLES = 12_000  # 0.5 s per binary frame: small enough to play smoothly, few enough to be cheap
LOOKAHEAD = 2  # chunks in flight per stream: the one streaming and the next one queued


class SinkClosed(Exception):
    """The sink could not deliver: the client went away."""


class Stream:
    def __init__(self, request_id: str, number: int, voice: Voice, params: SynthesisParams, feed: TextFeed,
                 runtime: Runtime, sink: Sink, metrics: Metrics, transport: str = "ws",
                 retry_until_s: float = 30.0) -> None:
        self.id = request_id
        self.number = number
        """Per-connection stream number (the WebSocket frame header carries it)."""
        self.voice = voice
        self.params = params
        self.feed = feed
        self.engine = runtime.engine
        self.batcher = runtime.batcher
        self.sink = sink
        self.metrics = metrics
        self.transport = transport
        self.retry_until_s = retry_until_s
        self.started_at = time.perf_counter()
        self.first_audio_at: float | None = None
        self.samples = 0
        self.frames = 0
        self.chunks = 0
        self._tickets: asyncio.Queue[Ticket[SynthesisItem] | None] = asyncio.Queue()
        self._slots = asyncio.Semaphore(LOOKAHEAD)
        self._in_flight: list[Ticket[SynthesisItem]] = []
        self._fader = CrossFader(int(CROSS_FADE_S * self.engine.sample_rate))
        self._cancelled = False
        self._cancel_outcome = "cancelled"
        self._recorded = False

    async def run(self) -> None:
        """Serve the stream to completion; never raises (errors are sent to the client)."""
        outcome = "ok"
        producer = asyncio.create_task(self._produce(), name=f"produce-{self.id}")
        try:
            await self._consume()
            await producer
            await self._finish()
        except asyncio.CancelledError:
            outcome = self._cancel_outcome
            raise
        except SinkClosed:  # the client went away mid-stream (reset, closed socket): not a server fault
            outcome = "cancelled"
        except Exception as exc:
            error = classify(exc, self.id)
            outcome = error.code
            with contextlib.suppress(SinkClosed):
                await self._emit(StreamFailed(error))
        finally:
            producer.cancel()
            for ticket in self._in_flight:
                ticket.cancel()
            self._record(outcome)

    def cancel(self, outcome: str = "cancelled") -> None:
        """Stop at once: queued chunks leave the queue, nothing more is sent. ``outcome`` is what the
        request is counted as (``cancelled``, or the error code that ended it)."""
        self._cancelled = True
        self._cancel_outcome = outcome
        for ticket in self._in_flight:
            ticket.cancel()

    # -- producer -------------------------------------------------------------------------------------

    async def _produce(self) -> None:
        previous: Ticket[SynthesisItem] | None = None
        index = 0
        try:
            while (text := await self.feed.next()) is not None:
                item = self._item(text, index)
                try:
                    self.engine.validate(item)
                except InvalidTextError:
                    continue  # a chunk of only punctuation or symbols: nothing to say, skip it
                if previous is not None:
                    await previous.started.wait()
                await self._slots.acquire()
                ticket = await self._submit(item, first=index == 0)
                self._in_flight.append(ticket)
                await self._tickets.put(ticket)
                previous = ticket
                index += 1
        finally:
            await self._tickets.put(None)

    def _item(self, text: str, index: int) -> SynthesisItem:
        return SynthesisItem.of(text, self.voice, self.params.for_chunk(index))

    async def _submit(self, item: SynthesisItem, first: bool) -> Ticket[SynthesisItem]:
        """The first chunk is refused at once when the queue is full (the client retries); later chunks
        of a stream already playing wait for room instead of cutting the audio off."""
        deadline = time.perf_counter() + self.retry_until_s
        while True:
            try:
                return self.batcher.submit(item, first=first, request_id=self.id)
            except QueueFullError as exc:
                if first or time.perf_counter() + exc.retry_after_ms / 1000 > deadline:
                    raise
                await asyncio.sleep(exc.retry_after_ms / 1000)

    # -- consumer -------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        while (ticket := await self._tickets.get()) is not None:
            wave = await ticket.future
            self._in_flight.remove(ticket)
            self._slots.release()
            self.chunks += 1
            await self._send(self._fader.push(wave))

    async def _send(self, wave: np.ndarray) -> None:
        for start in range(0, len(wave), FRAME_SAMPLES):
            if self._cancelled:
                return
            part = wave[start : start + FRAME_SAMPLES]
            await self._emit(AudioChunk(self.frames, to_pcm16(part)))
            if self.first_audio_at is None:
                self.first_audio_at = time.perf_counter()
            self.frames += 1
            self.samples += len(part)

    async def _finish(self) -> None:
        await self._send(self._fader.finish())
        if self._cancelled:
            return
        latency = time.perf_counter() - self.t0
        audio_s = self.samples / self.engine.sample_rate
        await self._emit(StreamEnd(
            samples=self.samples, chunks=self.chunks, frames=self.frames,
            ttfa_ms=round(1000 * (self.ttfa or latency), 1), latency_ms=round(1000 * latency, 1),
            rtf=round(latency / audio_s, 4) if audio_s else 0.0,
        ))

    async def _emit(self, event: Event) -> None:
        try:
            await self.sink.emit(self, event)
        except ConnectionError as exc:  # aiohttp: reset, or writing to a closing transport
            raise SinkClosed(str(exc)) from exc

    @property
    def t0(self) -> float:
        """When the request's clock starts: its first text (incremental streams may open empty)."""
        return self.feed.first_text_at or self.started_at

    @property
    def ttfa(self) -> float | None:
        return None if self.first_audio_at is None else self.first_audio_at - self.t0

    def record_cancelled(self) -> None:
        """For a stream cancelled before its task ever ran (so ``run``'s own bookkeeping never happened)."""
        self._record(self._cancel_outcome)

    def _record(self, outcome: str) -> None:
        if self._recorded:
            return
        self._recorded = True
        latency = time.perf_counter() - self.t0
        self.metrics.request_finished(self.transport, outcome, latency_s=latency, ttfa_s=self.ttfa,
                                      audio_s=self.samples / self.engine.sample_rate)
        log.info("stream finished", extra={"request_id": self.id, "outcome": outcome, "chunks": self.chunks,
                                           "samples": self.samples, "latency_s": round(latency, 3)})
