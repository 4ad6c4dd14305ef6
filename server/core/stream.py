"""One synthesis stream: text chunks in, cross-faded PCM frames out, in order, as chunks finish.

Two cooperating tasks: the producer takes chunks from the text feed and submits them to the batcher,
at most one ahead of the chunk being streamed, and only once the previous chunk has started (so a
stream's own next chunk never competes with its first one for a batch); the consumer awaits results in
order and sends them.

Text reaches the stream as pieces (``server.core.pieces``): a chunk of speech goes to the batcher; a
silence never does: the consumer writes its zeros between the chunks around it, without a cross-fade.
With marks on, each stretch of the stream (a chunk or a silence) is announced before its first sample.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

from batching import Entry, Ticket
from batching.playback import Playback
from engine import InvalidTextError, SynthesisItem, SynthesisParams, Voice
from observability import Metrics
from server.core.audio import CROSS_FADE_S, CrossFader, to_pcm16
from server.core.errors import classify
from server.core.events import AudioChunk, ChunkMarks, Event, StreamEnd, StreamFailed
from server.core.feed import TextFeed
from server.core.pieces import Chunk, Piece, Silence, chunk_speed
from text.marks import estimate_word_times

if TYPE_CHECKING:
    from server.core.boot import Runtime

log = logging.getLogger(__name__)

FRAME_SAMPLES = 12_000  # 0.5 s per binary frame: small enough to play smoothly, few enough to be cheap
LOOKAHEAD = 2  # chunks in flight per stream: the one streaming and the next one queued


class Sink(Protocol):
    """Where a stream's events go. A sink that can no longer deliver (the client went away) raises
    ``ConnectionError``; the stream then stops and is counted as cancelled."""

    async def emit(self, stream: Stream, event: Event) -> None: ...


class SinkClosed(Exception):
    """The sink could not deliver: the client went away."""


class Stream:
    def __init__(self, request_id: str, number: int, voice: Voice, params: SynthesisParams, feed: TextFeed,
                 runtime: Runtime, sink: Sink, metrics: Metrics, transport: str = "ws",
                 marks: bool = False, entry: Entry | None = None) -> None:
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
        self.marks = marks
        """Emit ``ChunkMarks`` before each stretch's audio."""
        self.started_at = time.perf_counter()
        self.first_audio_at: float | None = None
        self.samples = 0
        self.frames = 0
        self.chunks = 0
        self._tickets: asyncio.Queue[tuple[Piece, Ticket[SynthesisItem] | None] | None] = asyncio.Queue()
        self._slots = asyncio.Semaphore(LOOKAHEAD)
        self._in_flight: list[Ticket[SynthesisItem]] = []
        self._fader = CrossFader(int(CROSS_FADE_S * self.engine.sample_rate))
        self._held = 0  # samples the fader holds back (its tail); mirrored here to place chunk boundaries
        self._stretch_end = 0  # where the last announced stretch ends: the next one starts there
        self._cancelled = False
        self._cancel_outcome = "cancelled"
        self._recorded = False
        self._playback = Playback(self.batcher.config.first_audio_s)
        """The listener's clock: each chunk's deadline, and the silence heard when one is late."""
        self._plays: collections.deque[int] = collections.deque()
        """Playback index of each piece put in ``_tickets``, in order."""
        self._play_index: dict[int, int] = {}
        """Playback index of each in-flight ticket, by its seq."""
        self._entry = entry
        """Admission's early check let this stream in (``BatcherBase.refuse_early``): closed when its first
        chunk is queued or it ends."""

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
            self._close_entry()
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
            while (piece := await self.feed.next_piece()) is not None:
                if isinstance(piece, Silence):
                    self._plays.append(self._playback.submit(self._now(), piece.seconds)[0])
                    await self._tickets.put((piece, None))
                    continue
                item = self._item(piece, index)
                try:
                    self.engine.validate(item)
                except InvalidTextError:
                    continue  # a chunk of only punctuation or symbols: nothing to say, skip it
                if previous is not None:
                    await previous.started.wait()
                await self._slots.acquire()
                play, deadline = self._playback.submit(self._now(), self._seconds(item, index))
                self._close_entry()  # the first chunk now stands for itself in the queue
                ticket = self.batcher.submit(item, first=index == 0, request_id=self.id, deadline=deadline)
                self._plays.append(play)
                self._play_index[ticket.seq] = play
                self._in_flight.append(ticket)
                ticket.future.add_done_callback(functools.partial(self._ready, play))
                await self._tickets.put((piece, ticket))
                previous = ticket
                index += 1
        finally:
            await self._tickets.put(None)

    def _item(self, chunk: Chunk, index: int) -> SynthesisItem:
        params = self.params.for_chunk(index)
        if chunk.rate != 1.0:
            params = replace(params, speed=chunk_speed(params.speed, chunk.rate))
        return SynthesisItem.of(chunk.spoken, self.voice, params)

    def _seconds(self, item: SynthesisItem, index: int) -> float:
        """Audio the chunk adds for the listener: its length, less the cross-fade into the one before."""
        fade = CROSS_FADE_S if index > 0 else 0.0
        return max(0.0, self.engine.audio_seconds(item) - fade)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _played(self, samples: int) -> None:
        """The next piece's audio (``samples``) went out: count a stall if the listener ran dry first, and
        move the queued chunks' deadlines to what is now known of the listener's clock."""
        now = self._now()
        silence = self._playback.delivered(self._plays.popleft(), now, samples / self.engine.sample_rate)
        if silence > 0:
            self.metrics.stream_stalled(self.transport, silence)
        for ticket in self._in_flight:
            ticket.deadline = self._playback.deadline(self._play_index[ticket.seq], now)

    def _ready(self, play: int, _future: object) -> None:
        """A chunk's result is in, about to go out: the chunks queued behind it take the deadlines that
        follow from that now, before the scheduler's next decision (``_played`` confirms them once the
        audio is sent, which may wait for the socket). Until then they carried deadlines computed at their
        submission, with the first chunk assumed to arrive at its target."""
        now = self._now()
        self._playback.ready(play, now)
        for ticket in self._in_flight:
            if not ticket.future.done() and ticket.seq in self._play_index:
                ticket.deadline = self._playback.deadline(self._play_index[ticket.seq], now)

    # -- consumer -------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        while (planned := await self._tickets.get()) is not None:
            piece, ticket = planned
            if isinstance(piece, Silence):
                sent = self.samples
                await self._silence(piece.seconds)
                self._played(self.samples - sent)
                continue
            assert ticket is not None and isinstance(piece, Chunk)
            wave = await ticket.future
            self._in_flight.remove(ticket)
            self._play_index.pop(ticket.seq, None)
            self._slots.release()
            self.chunks += 1
            # The chunk's stretch ends after its whole faded output, held tail included: the next chunk's
            # fade-in mixes into that tail, so the fade belongs to this chunk (events.ChunkMarks).
            full = self._held - min(self._fader.fade, self._held, len(wave)) + len(wave)
            self._held = min(self._fader.fade, full)
            await self._announce(self.chunks - 1, piece.text, piece.spoken, self.samples + full)
            sent = self.samples
            await self._send(self._fader.push(wave))
            self._played(self.samples - sent)

    async def _silence(self, seconds: float) -> None:
        """Exact zeros: the chunk before ends without a fade (its held tail goes out as it is), and the
        next one starts fresh, as a stream's first chunk does."""
        await self._send(self._fader.finish())
        self._held = 0
        samples = round(seconds * self.engine.sample_rate)
        if samples > 0:
            await self._announce(None, "", "", self.samples + samples)
            await self._send(np.zeros(samples, dtype=np.float32))

    async def _announce(self, chunk: int | None, text: str, spoken: str, end: int) -> None:
        start, self._stretch_end = self._stretch_end, end
        if self.marks and not self._cancelled:
            words = tuple(estimate_word_times(spoken, end - start, start))
            await self._emit(ChunkMarks(chunk, text, spoken, start, end, words))

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
        self._close_entry()
        self._record(self._cancel_outcome)

    def _close_entry(self) -> None:
        if self._entry is not None:
            self._entry.close()
            self._entry = None

    def _record(self, outcome: str) -> None:
        if self._recorded:
            return
        self._recorded = True
        latency = time.perf_counter() - self.t0
        self.metrics.request_finished(self.transport, outcome, latency_s=latency, ttfa_s=self.ttfa,
                                      audio_s=self.samples / self.engine.sample_rate)
        log.info("stream finished", extra={"request_id": self.id, "outcome": outcome, "chunks": self.chunks,
                                           "samples": self.samples, "latency_s": round(latency, 3)})
