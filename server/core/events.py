"""What a stream produces, as typed events. Only a front end turns them into its wire format (WebSocket
JSON and frames, HTTP encoded bytes or SSE, RunPod job items)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from server.core.errors import ServiceError

if TYPE_CHECKING:
    from server.core.stream import Stream


@dataclass(frozen=True)
class AudioChunk:
    seq: int
    """Sequence number of this piece within its stream, from 0."""
    pcm: bytes
    """PCM s16le mono at the engine's sample rate."""


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


Event = AudioChunk | StreamEnd | StreamFailed


class Sink(Protocol):
    """Where a stream's events go. A sink that can no longer deliver (the client went away) raises
    ``ConnectionError``; the stream then stops and is counted as cancelled."""

    async def emit(self, stream: Stream, event: Event) -> None: ...


class EventQueue:
    """A sink for front ends that pull events (HTTP, RunPod): ``await next()`` until end or failure."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[Event] = asyncio.Queue()

    async def emit(self, stream: Stream, event: Event) -> None:
        await self._events.put(event)

    async def next(self) -> Event:
        return await self._events.get()
