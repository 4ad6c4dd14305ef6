"""What a stream produces, as typed events. Only a front end turns them into its wire format (WebSocket
JSON and frames, HTTP encoded bytes or SSE, RunPod job items)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from server.core.errors import ServiceError
from text.marks import WordTime


@dataclass(frozen=True)
class AudioChunk:
    seq: int
    """Sequence number of this piece within its stream, from 0."""
    pcm: bytes
    """PCM s16le mono at the engine's sample rate."""


@dataclass(frozen=True)
class ChunkMarks:
    """Which text a stretch of the stream speaks; emitted (when the request asked for marks) before any
    sample of that stretch. Stretches tile the stream: each starts where the one before ends, the last
    ends at ``StreamEnd.samples``. Between chunk k-1 and k the boundary is the first sample after their
    cross-fade, the first in which chunk k sounds alone: the fade belongs to the earlier chunk. So a
    chunk's end is known as soon as its own audio is, whatever follows it."""

    chunk: int | None
    """Index of the text chunk (0 .. StreamEnd.chunks - 1); None for a break (silence)."""
    text: str
    """The chunk's text as the client gave it ("" continues the previous chunk's text)."""
    spoken: str
    """The text the model was given (normalised, markup removed)."""
    start_sample: int
    """First sample of the stretch, counted from the stream's first sample."""
    end_sample: int
    """One past its last sample."""
    words: tuple[WordTime, ...] = ()
    """Word spans inside the stretch, estimated from UTF-8 bytes (as F5-TTS sizes its output)."""

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "chunk": self.chunk, "text": self.text, "spoken": self.spoken, "start_sample": self.start_sample,
            "end_sample": self.end_sample,
            "words": [{"word": w.word, "start": w.start, "end": w.end, "estimate": w.estimate} for w in self.words]}
        if self.chunk is None:
            data["break"] = True
        return data


@dataclass(frozen=True)
class StreamEnd:
    samples: int
    """Samples sent for this stream."""
    chunks: int
    """Text chunks synthesised."""
    frames: int
    """Audio pieces sent."""
    ttfa_ms: float
    """Milliseconds from the request (its first text) to the first audio sent."""
    latency_ms: float
    """Milliseconds from the request to the end."""
    rtf: float
    """latency / audio duration."""

    def figures(self) -> dict[str, float | int]:
        return {"samples": self.samples, "chunks": self.chunks, "frames": self.frames, "ttfa_ms": self.ttfa_ms,
                "latency_ms": self.latency_ms, "rtf": self.rtf}


@dataclass(frozen=True)
class StreamFailed:
    error: ServiceError


Event = AudioChunk | ChunkMarks | StreamEnd | StreamFailed


class EventQueue:
    """A sink (``server.core.stream.Sink``) for front ends that pull events (HTTP, RunPod): ``await next()``
    until end or failure."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[Event] = asyncio.Queue()

    async def emit(self, stream: object, event: Event) -> None:
        await self._events.put(event)

    async def next(self) -> Event:
        return await self._events.get()
